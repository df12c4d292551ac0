//! Password hashing with argon2id, off the async runtime.
//!
//! A hash takes tens of milliseconds of CPU and 19 MiB of memory. Running it
//! on an async worker would stall every other call on that worker, and
//! running unboundedly many at once would exhaust memory, so each hash runs
//! on a blocking thread *holding a semaphore permit* sized to the cores: a
//! login storm queues, while cheap RPCs keep flowing. The permit moves into
//! the blocking task, so a client that disconnects mid-hash cannot release
//! it early and let more hashes start than there are permits.
//!
//! Verification reads the parameters from the stored PHC string, so raising
//! the configured cost later makes the next successful login rehash
//! ([`Hasher::needs_rehash`]). Unknown emails verify against a dummy hash
//! made at start-up with the current parameters, so both paths cost the same.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hashing pool is closed")]
    Closed,
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// argon2id with `memory_kib`, `iterations`, parallelism 1, at most
    /// `concurrency` hashes at once.
    pub fn new(memory_kib: u32, iterations: u32, concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(HashError::Params)?;
        let dummy_hash = hash_blocking(&params, "a password nobody has, for unknown emails")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let (params, password) = (self.params.clone(), password.clone());
        self.run(move || hash_blocking(&params, password.expose()))
            .await?
    }

    /// Whether `password` matches `stored`. A malformed stored hash is "no".
    pub async fn verify(&self, password: &Password, stored: &str) -> Result<bool, HashError> {
        let (password, stored) = (password.clone(), stored.to_owned());
        self.run(move || verify_blocking(password.expose(), &stored))
            .await
    }

    /// Spends the same work as [`Hasher::verify`] on a dummy hash and says
    /// no: what an unknown email costs.
    pub async fn verify_dummy(&self, password: &Password) -> Result<bool, HashError> {
        let dummy = self.dummy_hash.clone();
        let password = password.clone();
        self.run(move || {
            verify_blocking(password.expose(), &dummy);
            false
        })
        .await
    }

    /// Whether `stored` was made with weaker parameters than configured.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return true;
        };
        if hash.algorithm != Algorithm::Argon2id.ident() {
            return true;
        }
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        params.m_cost() < self.params.m_cost()
            || params.t_cost() < self.params.t_cost()
            || params.p_cost() < self.params.p_cost()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Closed)?;
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await?)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(HashError::Hash)
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    // `verify_password` uses the parameters inside `stored`, not ours.
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> Password {
        Password::new_password("password", text).unwrap()
    }

    #[tokio::test]
    async fn same_password_gets_different_salts_and_verifies() {
        let hasher = Hasher::new(19_456, 2, 2).unwrap();
        let a = hasher.hash(&password("correct horse")).await.unwrap();
        let b = hasher.hash(&password("correct horse")).await.unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&password("correct horse"), &a).await.unwrap());
        assert!(!hasher.verify(&password("correct horsf"), &a).await.unwrap());
        assert!(
            !hasher
                .verify_dummy(&password("correct horse"))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn weaker_hashes_need_a_rehash() {
        let weak = Hasher::new(8_192, 1, 1).unwrap();
        let strong = Hasher::new(19_456, 2, 1).unwrap();
        let old = weak.hash(&password("correct horse")).await.unwrap();
        assert!(strong.needs_rehash(&old));
        assert!(
            strong
                .verify(&password("correct horse"), &old)
                .await
                .unwrap()
        );
        let new = strong.hash(&password("correct horse")).await.unwrap();
        assert!(!strong.needs_rehash(&new));
        assert!(strong.needs_rehash("not a hash"));
    }
}
