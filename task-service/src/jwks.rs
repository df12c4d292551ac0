//! The token-signing keys this service trusts, and how they are kept fresh.
//!
//! Keys come from the auth-service's `GetJwks` (or a JWK Set file). They are
//! fetched at start with backoff until the first success, so the two
//! services may start in any order: until then health is `NOT_SERVING` and
//! calls are `UNAVAILABLE`. After that a background task refreshes them on
//! a fixed interval, and a token with an unknown `kid` may trigger one extra
//! fetch, at most once per [`ON_DEMAND_MIN_INTERVAL`], so a flood of junk
//! `kid`s costs the auth-service at most one call per few seconds.
//!
//! Only the configured source is ever fetched: nothing in a token (`kid`,
//! `jku`, `x5u`, `jwk`) chooses where keys come from.

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use access_token::{Jwks, Verifier};
use anyhow::Context;
use serving::CancellationToken;
use todo_proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tonic::transport::{Channel, Endpoint};

/// Smallest gap between two fetches caused by unknown `kid`s.
pub const ON_DEMAND_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait between two attempts while the source is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest a single fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where keys come from.
enum Source {
    AuthService(AuthServiceClient<Channel>),
    File(PathBuf),
}

/// The trusted keys, with the [`Verifier`] built from them.
pub struct KeySet {
    verifier: Verifier,
    source: Source,
    current: Mutex<Option<Jwks>>,
    /// Bumped whenever the key set changes, so cached verifications made
    /// with older keys are not trusted any more.
    generation: AtomicU64,
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
    /// Flips to true once, when the first keys are installed.
    first_keys: tokio::sync::watch::Sender<bool>,
}

impl KeySet {
    /// Keys from the auth-service at `auth`, or from `jwks_file` if set.
    /// Nothing is fetched yet (see [`KeySet::run`]).
    pub fn new(
        verifier: Verifier,
        auth: Endpoint,
        jwks_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let source = match jwks_file {
            Some(path) => Source::File(path),
            None => {
                let channel = auth
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(FETCH_TIMEOUT)
                    .connect_lazy();
                Source::AuthService(AuthServiceClient::new(channel))
            }
        };
        Ok(Self {
            verifier,
            source,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            last_on_demand: tokio::sync::Mutex::new(None),
            first_keys: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Whether any key has arrived yet.
    pub fn ready(&self) -> bool {
        self.verifier.key_count() > 0
    }

    /// Resolves once the first keys are installed.
    pub async fn wait_ready(&self) {
        let mut ready = self.first_keys.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    async fn fetch(&self) -> anyhow::Result<Jwks> {
        let json = match &self.source {
            Source::AuthService(client) => {
                let response =
                    tokio::time::timeout(FETCH_TIMEOUT, client.clone().get_jwks(GetJwksRequest {}))
                        .await
                        .context("GetJwks timed out")?
                        .context("GetJwks failed")?;
                response.into_inner().jwks_json
            }
            Source::File(path) => tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?,
        };
        Jwks::from_json(&json).context("the key set is not a JWK Set")
    }

    /// Fetches the key set once; installs it if it changed. An empty set is
    /// refused (the old keys stay): it would lock every user out.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let outcome = self.install().await;
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        serving::metrics::metrics()
            .jwks_refreshes
            .get_or_create(&serving::metrics::OutcomeLabels {
                component: "task-service",
                outcome: label,
            })
            .inc();
        outcome
    }

    async fn install(&self) -> anyhow::Result<()> {
        let jwks = self.fetch().await?;
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref() == Some(&jwks) {
            return Ok(());
        }
        let previous = self.verifier.key_count();
        let trusted = self.verifier.set_keys(&jwks);
        if trusted == 0 {
            if let Some(old) = current.as_ref() {
                self.verifier.set_keys(old);
            }
            anyhow::bail!("the key set holds no Ed25519 signing key");
        }
        *current = Some(jwks);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.first_keys.send_replace(true);
        tracing::info!(keys = trusted, previous, "token-signing keys updated");
        Ok(())
    }

    /// Refreshes now because a token named a `kid` we do not hold, unless
    /// that already happened within [`ON_DEMAND_MIN_INTERVAL`]. Callers that
    /// arrive during a fetch wait for it, then verify against its result.
    pub async fn refresh_for_unknown_kid(&self) {
        let mut last = self.last_on_demand.lock().await;
        if last.is_some_and(|at| at.elapsed() < ON_DEMAND_MIN_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.refresh().await {
            tracing::warn!(error = format!("{error:#}"), "on-demand key refresh failed");
        }
    }

    /// Keeps the keys fresh until `shutdown`: retries with backoff until a
    /// fetch succeeds, then refreshes every `interval`.
    pub async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.refresh().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    interval
                }
                Err(error) => {
                    if self.ready() {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "key refresh failed; keeping the current keys"
                        );
                    } else {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            ?backoff,
                            "no token-signing keys yet; retrying"
                        );
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use access_token::SigningKey;

    use super::*;

    fn write(path: &std::path::Path, key: &SigningKey) {
        std::fs::write(path, Jwks::of([key]).to_json()).unwrap();
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_interval() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("jwks.json");
        let (first, second, third) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        write(&path, &first);
        let keys = KeySet::new(
            Verifier::new("iss", "aud", 0),
            Endpoint::from_static("http://unused"),
            Some(path.clone()),
        )
        .unwrap();
        assert!(!keys.ready());
        keys.refresh().await.unwrap();
        assert!(keys.ready());
        let generation = keys.generation();

        // A rotated key is picked up by the first unknown kid...
        write(&path, &second);
        keys.refresh_for_unknown_kid().await;
        assert_eq!(keys.generation(), generation + 1);
        // ...but a flood of unknown kids right after causes no more fetches.
        write(&path, &third);
        for _ in 0..100 {
            keys.refresh_for_unknown_kid().await;
        }
        assert_eq!(keys.generation(), generation + 1);
        // The scheduled refresh still sees it.
        keys.refresh().await.unwrap();
        assert_eq!(keys.generation(), generation + 2);
    }

    #[tokio::test]
    async fn an_empty_key_set_keeps_the_current_keys() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("jwks.json");
        write(&path, &SigningKey::generate().unwrap());
        let keys = KeySet::new(
            Verifier::new("iss", "aud", 0),
            Endpoint::from_static("http://unused"),
            Some(path.clone()),
        )
        .unwrap();
        keys.refresh().await.unwrap();
        std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
        assert!(keys.refresh().await.is_err());
        assert!(keys.ready(), "the old keys stay trusted");
    }
}
