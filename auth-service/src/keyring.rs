//! The signing keys this service holds, and the JWK Set it publishes.
//!
//! Keys live in the database so that restarts and replicas share them.
//! The newest active key signs; retired keys stay published (and trusted by
//! our own verifier) until every token they signed has expired, so rotating
//! a key never logs anyone out. Each replica reloads the keys periodically
//! and whenever it meets a `kid` it does not know, so a rotation made by one
//! process (or by `auth-service rotate-key`) reaches all of them.
//!
//! Private keys are stored sealed with the key-encryption key (see
//! [`crate::key_encryption`]); a copy of the database holds no usable key.
//! With `--signing-key-file`, the file's key signs and is published, and
//! is never copied into the database; keys in the database stay published
//! while tokens they signed may live.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use access_token::{Jwks, SigningKey, Verifier};
use chrono::TimeDelta;
use serving::clock::Clock;
use tokio::sync::Mutex;

use crate::{
    key_encryption::{self, KeyEncryption, SealError},
    store::{AuthStore, SecretSlot, StoreError, Time},
};

/// The longest time a key reload may be skipped after the previous one when
/// an unknown `kid` shows up: a flood of junk kids costs one query per this.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored signing key {kid} is unusable: {source}")]
    BadKey {
        kid: String,
        source: access_token::KeyError,
    },
    #[error("no signing key is active")]
    NoKey,
    #[error(transparent)]
    Seal(#[from] SealError),
}

struct Keys {
    signing: Arc<SigningKey>,
    jwks_json: Arc<str>,
}

pub struct Keyring {
    store: Arc<dyn AuthStore>,
    keks: Arc<dyn KeyEncryption>,
    /// `--signing-key-file`'s key: it signs, and is not in the database.
    file_key: Option<Arc<SigningKey>>,
    clock: Clock,
    /// How long a retired key stays published: the longest an access token
    /// it signed can still be accepted.
    retention: TimeDelta,
    keys: RwLock<Arc<Keys>>,
    verifier: Verifier,
    last_reload: Mutex<Instant>,
}

impl Keyring {
    /// Loads the keys, creating the first one when the database has none.
    pub async fn load(
        store: Arc<dyn AuthStore>,
        keks: Arc<dyn KeyEncryption>,
        clock: Clock,
        verifier: Verifier,
        access_token_ttl: Duration,
        key_file: Option<SigningKey>,
    ) -> Result<Self, KeyringError> {
        let now = clock.now();
        let file_key = key_file.map(Arc::new);
        if file_key.is_none()
            && !store
                .signing_keys()
                .await?
                .iter()
                .any(|key| key.retire_time.is_none())
        {
            let key = SigningKey::generate().map_err(|_| KeyringError::NoKey)?;
            let sealed = keks.seal(
                key.pkcs8_der(),
                &SecretSlot::SigningKey(key.kid().to_owned()).purpose(),
            )?;
            if store
                .insert_first_signing_key(key.kid(), &sealed, now)
                .await?
            {
                serving::metrics::metrics().signing_keys_generated.inc();
                tracing::info!(kid = key.kid(), "generated the first signing key");
            }
        }
        let retention = TimeDelta::from_std(access_token_ttl).unwrap_or(TimeDelta::MAX)
            + TimeDelta::seconds(60);
        let keys = read_keys(
            store.as_ref(),
            keks.as_ref(),
            file_key.as_ref(),
            &verifier,
            now,
            retention,
        )
        .await?;
        Ok(Self {
            store,
            keks,
            file_key,
            clock,
            retention,
            keys: RwLock::new(Arc::new(keys)),
            verifier,
            // As if the last on-demand reload were long ago: the first
            // unknown kid after start may reload at once.
            last_reload: Mutex::new(
                Instant::now()
                    .checked_sub(MIN_RELOAD_INTERVAL)
                    .unwrap_or_else(Instant::now),
            ),
        })
    }

    fn current(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &impl serde::Serialize) -> Result<String, access_token::KeyError> {
        self.current().signing.sign(claims)
    }

    /// The JWK Set document of every key still needed for verification.
    pub fn jwks_json(&self) -> Arc<str> {
        self.current().jwks_json.clone()
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Re-reads the keys from the database. With `only_if_stale`, does
    /// nothing if the last reload was under [`MIN_RELOAD_INTERVAL`] ago.
    pub async fn reload(&self, only_if_stale: bool) -> Result<(), KeyringError> {
        let mut last = self.last_reload.lock().await;
        if only_if_stale && last.elapsed() < MIN_RELOAD_INTERVAL {
            return Ok(());
        }
        let keys = read_keys(
            self.store.as_ref(),
            self.keks.as_ref(),
            self.file_key.as_ref(),
            &self.verifier,
            self.clock.now(),
            self.retention,
        )
        .await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        *last = Instant::now();
        Ok(())
    }
}

async fn read_keys(
    store: &dyn AuthStore,
    keks: &dyn KeyEncryption,
    file_key: Option<&Arc<SigningKey>>,
    verifier: &Verifier,
    now: Time,
    retention: TimeDelta,
) -> Result<Keys, KeyringError> {
    let mut published: Vec<Arc<SigningKey>> = file_key.cloned().into_iter().collect();
    let mut signing = file_key.cloned();
    // Newest first: the first active key is the one to sign with.
    for stored in store.signing_keys().await? {
        let still_needed = stored
            .retire_time
            .is_none_or(|retired| retired + retention > now);
        if !still_needed {
            continue;
        }
        if file_key.is_some_and(|file| file.kid() == stored.kid) {
            continue;
        }
        let slot = SecretSlot::SigningKey(stored.kid.clone());
        let private_key = key_encryption::open_stored(keks, &stored.private_key, &slot)?;
        let key = SigningKey::from_pkcs8_der(secrecy::ExposeSecret::expose_secret(&private_key))
            .map_err(|source| KeyringError::BadKey {
                kid: stored.kid.clone(),
                source,
            })?;
        let key = Arc::new(key);
        if stored.retire_time.is_none() && signing.is_none() {
            signing = Some(key.clone());
        }
        published.push(key);
    }
    let signing = signing.ok_or(KeyringError::NoKey)?;
    let jwks = Jwks::of(published.iter().map(std::convert::AsRef::as_ref));
    verifier.set_keys(&jwks);
    Ok(Keys {
        signing,
        jwks_json: jwks.to_json().into(),
    })
}

/// Makes a new key the active one and retires the others: what
/// `auth-service rotate-key` does. Running replicas pick it up on their
/// next reload; tokens signed by the old key stay valid until they expire.
pub async fn rotate(
    store: &dyn AuthStore,
    keks: &dyn KeyEncryption,
    now: Time,
) -> Result<String, KeyringError> {
    let key = SigningKey::generate().map_err(|_| KeyringError::NoKey)?;
    let sealed = keks.seal(
        key.pkcs8_der(),
        &SecretSlot::SigningKey(key.kid().to_owned()).purpose(),
    )?;
    store.activate_signing_key(key.kid(), &sealed, now).await?;
    serving::metrics::metrics().signing_keys_generated.inc();
    Ok(key.kid().to_owned())
}
