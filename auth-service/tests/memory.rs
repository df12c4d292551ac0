//! A sign-in storm keeps the auth-service within its memory formula
//! (checklist I6, L6), while an anonymous caller's `GetJwks` keeps being
//! answered through it: peak memory stays under the idle memory plus
//! `hash concurrency × hash memory` plus a few MiB, whatever the load, so a
//! memory limit derived from that formula (deploy/k8s) holds.
//!
//! The service runs as a separate process (the built binary), and its
//! memory is read from `/proc`. Two measures, both bounded:
//!
//! - the anonymous memory (`RssAnon`: the heap, the hash blocks, buffers),
//!   sampled every few milliseconds through the storm: what an allocator
//!   overshoot (the 430 MiB of the abuse issue) grows, and what a cgroup
//!   cannot reclaim;
//! - the peak resident set (`VmHWM`), which also counts the binary's code
//!   pages as the storm first runs them: bounded by the same formula plus
//!   the size of the code itself.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use test_harness::*;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};

const HASH_CONCURRENCY: u64 = 2;
const HASH_MEMORY_KIB: u64 = 19_456;
/// Allocator and buffer slack on top of the formula: the "few MiB".
const SLACK_KIB: u64 = 6 * 1024;
const LOGINS: usize = 600;
const IN_FLIGHT: usize = 16;
/// Accounts the logins are spread over: a sign-in counts against its
/// account's window until it succeeds, so many at once on one account
/// would be throttled as parallel guessing.
const ACCOUNTS: usize = 40;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of `/proc/{pid}/status`, in KiB.
fn status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
}

/// The size of the executable's code mapping(s), in KiB: what the storm
/// may page in as it first runs code paths.
fn code_kib(pid: u32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the executable");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc");
    maps.lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("r-xp"))
        .filter(|line| line.ends_with(exe.to_str().expect("a UTF-8 path")))
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            Some((end - start) / 1024)
        })
        .sum()
}

/// Samples `RssAnon` of `pid` every 2 ms on its own thread until dropped,
/// keeping the largest value seen.
struct AnonPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnonPeak {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(status_kib(pid, "RssAnon")));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_kib(pid, "RssAnon"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the sampler ends");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn a_sign_in_storm_stays_within_the_memory_formula() {
    for backend in Backend::all() {
        let db = backend.fresh().await;
        let port = closed_port().await.port();
        let child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(auth_file_args(&db))
            .args(["--hash-concurrency", &HASH_CONCURRENCY.to_string()])
            .args(["--hash-memory-kib", &HASH_MEMORY_KIB.to_string()])
            .args([
                "--address-rate-per-minute",
                "1000000",
                "--address-burst",
                "1000000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the auth-service binary");
        let process = Process(child);
        let pid = process.0.id();
        let client = AuthServiceClient::new(connect(&format!("http://127.0.0.1:{port}")).await);
        let idle = status_kib(pid, "VmRSS");
        let anon = AnonPeak::start(pid);
        let idle_anon = status_kib(pid, "RssAnon");

        let emails: Vec<String> = (0..ACCOUNTS).map(|_| unique_email()).collect();
        futures::stream::iter(emails.clone())
            .for_each_concurrent(IN_FLIGHT, |email| {
                let mut client = client.clone();
                async move {
                    register(&mut client, &email).await;
                }
            })
            .await;
        // A victim: anonymous GetJwks calls all through the storm, each
        // answered (the hashing pool is the storm's; cheap calls stay
        // served).
        let storming = Arc::new(AtomicBool::new(true));
        let victim = tokio::spawn({
            let (mut client, storming) = (client.clone(), storming.clone());
            async move {
                let (mut served, mut refused) = (0u64, Vec::new());
                while storming.load(Ordering::Relaxed) {
                    match client.get_jwks(pb::GetJwksRequest {}).await {
                        Ok(_) => served += 1,
                        Err(status) => refused.push(status.code()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (served, refused)
            }
        });
        let logins = futures::stream::iter(0..LOGINS)
            .map(|i| {
                let mut client = client.clone();
                let email = emails[i % ACCOUNTS].clone();
                async move {
                    client
                        .login(pb::LoginRequest {
                            email,
                            password: PASSWORD.into(),
                        })
                        .await
                        .map(drop)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        storming.store(false, Ordering::Relaxed);
        let (served, refused) = victim.await.expect("the victim task");
        assert!(
            served > 0 && refused.is_empty(),
            "{backend}: GetJwks during the storm: {served} served, refused {refused:?}"
        );
        let failed = logins.iter().filter(|result| result.is_err()).count();
        assert_eq!(
            failed, 0,
            "every sign-in of the storm succeeds on {backend}"
        );

        let peak_anon = anon.finish();
        let peak = status_kib(pid, "VmHWM");
        let code = code_kib(pid);
        let hashes = HASH_CONCURRENCY * HASH_MEMORY_KIB;
        eprintln!(
            "{backend}: {LOGINS} logins, {IN_FLIGHT} in flight: anonymous {idle_anon} -> \
             {peak_anon} KiB; resident {idle} -> {peak} KiB (code {code} KiB); \
             hash blocks {hashes} KiB"
        );
        assert!(
            peak_anon <= idle_anon + hashes + SLACK_KIB,
            "{backend}: anonymous memory peaked at {peak_anon} KiB, over idle {idle_anon} KiB \
             + {HASH_CONCURRENCY} x {HASH_MEMORY_KIB} KiB + {SLACK_KIB} KiB"
        );
        assert!(
            peak <= idle + hashes + code + SLACK_KIB,
            "{backend}: peak RSS {peak} KiB over idle {idle} KiB + {HASH_CONCURRENCY} x \
             {HASH_MEMORY_KIB} KiB + code {code} KiB + {SLACK_KIB} KiB"
        );
    }
}
