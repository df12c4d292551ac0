//! A sign-in storm keeps the auth-service within its memory formula
//! (checklist I6, L6): peak RSS stays under the idle RSS plus
//! `hash concurrency × hash memory` plus a few MiB, whatever the load, so a
//! memory limit derived from that formula (deploy/k8s) holds.
//!
//! The service runs as a separate process (the built binary), and its peak
//! resident set (`VmHWM`) is read from `/proc` after the storm.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use support::*;
use test_harness::Backend;
use todo_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

const HASH_CONCURRENCY: u64 = 2;
const HASH_MEMORY_KIB: u64 = 19_456;
/// Allocator and buffer slack on top of the formula.
const SLACK_KIB: u64 = 8 * 1024;
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

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn connect(port: u16) -> AuthServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match AuthServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("the binary never listened: {error}"),
        }
    }
}

#[tokio::test]
async fn a_sign_in_storm_stays_within_the_memory_formula() {
    for backend in Backend::all() {
        let db = backend.fresh().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_auth-service"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
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
        let client = connect(port).await;
        let (idle, _) = memory_kib(pid);

        let emails: Vec<String> = (0..ACCOUNTS).map(|_| unique_email()).collect();
        futures::stream::iter(emails.clone())
            .for_each_concurrent(IN_FLIGHT, |email| {
                let mut client = client.clone();
                async move {
                    register(&mut client, &email).await;
                }
            })
            .await;
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
        let failed = logins.iter().filter(|result| result.is_err()).count();
        assert_eq!(
            failed, 0,
            "every sign-in of the storm succeeds on {backend}"
        );

        let (_, peak) = memory_kib(pid);
        let bound = idle + HASH_CONCURRENCY * HASH_MEMORY_KIB + SLACK_KIB;
        eprintln!(
            "{backend}: idle {idle} KiB, peak {peak} KiB, bound {bound} KiB ({LOGINS} logins, {IN_FLIGHT} in flight)"
        );
        assert!(
            peak <= bound,
            "{backend}: peak RSS {peak} KiB over idle {idle} KiB + {HASH_CONCURRENCY} x {HASH_MEMORY_KIB} KiB + {SLACK_KIB} KiB"
        );
    }
}
