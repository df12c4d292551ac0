//! Password hashing with argon2id, off the async runtime and within a
//! fixed memory budget.
//!
//! A hash takes tens of milliseconds of CPU and `m` KiB of memory (19 MiB
//! at OWASP's parameters). Two things would go wrong if each hash simply
//! ran on a blocking thread with a fresh buffer:
//!
//! - on an async worker it would stall every other call on that worker;
//! - memory would follow the number of threads that ever hashed, not the
//!   number hashing now: freed 19 MiB buffers stay in the allocator's
//!   per-thread arenas, so a sign-in storm left the process at 430 MiB
//!   with four hashes at a time.
//!
//! So hashing runs on a **fixed set of worker threads**, one per permit,
//! each owning one memory block that it allocates on its first hash and
//! reuses for every later one (argon2's `hash_password_into_with_memory`).
//! Peak memory is therefore the idle process plus `concurrency × m` plus
//! small change, whatever the load (checklist I6, L6). A caller first
//! takes one of `concurrency` permits (waiting while all are taken, which
//! is cancellable), then hands its job to the workers. The permit moves
//! into the job, so a client that disconnects mid-hash cannot release it
//! early and let more jobs queue than there are workers.
//!
//! The hashing threads run at a lower priority (nice +[`HASHING_NICENESS`])
//! than the rest of the process and of the machine: a hash is
//! throughput work, a call waiting for a core is latency. While sign-ins
//! keep every hashing thread busy, the runtime's threads (a Refresh, a
//! JWKS fetch) and a task-service on the same cores still get a core as
//! soon as they are runnable; with the cores otherwise idle the hashes
//! get them all.
//!
//! Verification reads the parameters from the stored PHC string, so raising
//! the configured cost later makes the next successful login rehash
//! ([`Hasher::needs_rehash`]); a stored hash costlier than the configured
//! one grows the worker's block to fit, once. Unknown emails verify against
//! a dummy hash made at start-up with the current parameters, so both paths
//! cost the same.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("hashing failed: {0}")]
    Hash(String),
    #[error("the hashing workers are gone")]
    Closed,
    #[error("cannot start a hashing worker: {0}")]
    Spawn(std::io::Error),
}

/// Work for a hashing thread: it gets the thread's memory block.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: mpsc::UnboundedSender<(Job, OwnedSemaphorePermit)>,
    /// Callers waiting for a permit (for metrics and logs).
    waiting: Arc<AtomicUsize>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// argon2id with `memory_kib`, `iterations`, parallelism 1, on
    /// `concurrency` dedicated threads.
    pub async fn start(
        memory_kib: u32,
        iterations: u32,
        concurrency: usize,
    ) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(HashError::Params)?;
        let concurrency = concurrency.max(1);
        let (jobs, queue) = mpsc::unbounded_channel::<(Job, OwnedSemaphorePermit)>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&queue))
                .map_err(HashError::Spawn)?;
        }
        let mut hasher = Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs,
            waiting: Arc::default(),
            dummy_hash: Arc::from(""),
        };
        let dummy = hasher
            .hash_text("a password nobody has, for unknown emails".into())
            .await?;
        hasher.dummy_hash = dummy.into();
        Ok(hasher)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        self.hash_text(password.expose().to_owned()).await
    }

    async fn hash_text(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move |blocks| hash_with(blocks, &params, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored`. A malformed stored hash is "no".
    pub async fn verify(&self, password: &Password, stored: &str) -> Result<bool, HashError> {
        let (password, stored) = (password.clone(), stored.to_owned());
        self.run(move |blocks| verify_with(blocks, password.expose().as_bytes(), &stored))
            .await
    }

    /// Spends the same work as [`Hasher::verify`] on a dummy hash and says
    /// no: what an unknown email costs.
    pub async fn verify_dummy(&self, password: &Password) -> Result<bool, HashError> {
        let (dummy, password) = (self.dummy_hash.clone(), password.clone());
        self.run(move |blocks| {
            verify_with(blocks, password.expose().as_bytes(), &dummy);
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

    /// Callers waiting for a hashing thread right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = {
            let metrics = serving::metrics::metrics();
            let waited = std::time::Instant::now();
            self.waiting.fetch_add(1, Ordering::Relaxed);
            metrics.hash_waiting.inc();
            let _done = Decrement(&self.waiting);
            let permit = self.permits.clone().acquire_owned().await;
            metrics.hash_waiting.dec();
            metrics
                .hash_wait_seconds
                .observe(waited.elapsed().as_secs_f64());
            permit.map_err(|_| HashError::Closed)?
        };
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            // The caller may have gone; the work was done all the same.
            let _ = answer.send(work(blocks));
        });
        self.jobs
            .send((job, permit))
            .map_err(|_| HashError::Closed)?;
        answered.await.map_err(|_| HashError::Closed)
    }
}

/// Decrements a counter when dropped, however the wait ends.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How much lower than the process the hashing threads' priority is (Linux
/// `nice` values are per thread).
pub const HASHING_NICENESS: i32 = 10;

/// One hashing thread: takes jobs until the [`Hasher`] is gone, always with
/// the same memory block. The permit of a job is released when it is done.
fn work(queue: &Mutex<mpsc::UnboundedReceiver<(Job, OwnedSemaphorePermit)>>) {
    lower_priority();
    let mut blocks = Vec::new();
    loop {
        // Only one idle thread waits on the queue at a time; the others
        // wait for the lock, which comes to the same.
        let next = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some((job, _permit)) = next else {
            return;
        };
        job(&mut blocks);
    }
}

/// Lowers the calling thread's priority by [`HASHING_NICENESS`]. Always
/// allowed to an unprivileged process; where it fails, hashing goes on at
/// the process's priority.
fn lower_priority() {
    let thread = rustix::thread::gettid();
    let lowered = rustix::process::getpriority_process(Some(thread)).and_then(|nice| {
        rustix::process::setpriority_process(Some(thread), nice + HASHING_NICENESS)
    });
    if let Err(error) = lowered {
        tracing::warn!(%error, "cannot lower the priority of a hashing thread");
    }
}

/// `blocks` with room for `params`, grown (once) if it has less.
fn memory_for<'a>(blocks: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    &mut blocks[..needed]
}

fn hash_with(
    blocks: &mut Vec<Block>,
    params: &Params,
    password: &[u8],
) -> Result<String, HashError> {
    let fail = |error: &dyn std::fmt::Display| HashError::Hash(error.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| fail(&e))?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password,
            salt_bytes,
            &mut output,
            memory_for(blocks, params),
        )
        .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(|e| fail(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to `stored` with the parameters, salt and
/// output length `stored` names. The final comparison is constant-time
/// (`Output`'s equality).
fn verify_with(blocks: &mut Vec<Block>, password: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm),
        Params::try_from(&hash),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut output = [0u8; Output::MAX_LENGTH];
    let output = &mut output[..expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, output, memory_for(blocks, &params))
        .is_ok()
        && Output::new(output).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn password(text: &str) -> Password {
        Password::new_password("password", text).unwrap()
    }

    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority_than_the_runtime() {
        let hasher = Hasher::start(64, 1, 2).await.unwrap();
        let ours = rustix::process::getpriority_process(None).unwrap();
        for _ in 0..4 {
            let theirs = hasher
                .run(|_| rustix::process::getpriority_process(None).unwrap())
                .await
                .unwrap();
            assert_eq!(theirs, (ours + HASHING_NICENESS).min(19));
        }
        // This thread's (and so the runtime's) priority is unchanged.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), ours);
    }

    #[tokio::test]
    async fn same_password_gets_different_salts_and_verifies() {
        let hasher = Hasher::start(19_456, 2, 2).await.unwrap();
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
    async fn hashes_agree_with_the_argon2_crate_both_ways() {
        let hasher = Hasher::start(8_192, 1, 1).await.unwrap();
        let ours = hasher.hash(&password("correct horse")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        // A hash made the usual way, with other parameters and a longer
        // output, verifies here (the worker's block grows to fit).
        let params = Params::new(16_384, 2, 1, Some(48)).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(
            hasher
                .verify(&password("correct horse"), &theirs)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&password("correct horsf"), &theirs)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&password("correct horse"), "not a hash")
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn weaker_hashes_need_a_rehash() {
        let weak = Hasher::start(8_192, 1, 1).await.unwrap();
        let strong = Hasher::start(19_456, 2, 1).await.unwrap();
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
