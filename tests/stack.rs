//! The README's run command (`cargo run` at the root, i.e. the `todo-stack`
//! binary) started as a child process: all three services answer a health
//! check, and SIGTERM stops them with exit status 0.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use test_harness::health;
use tonic_health::pb::health_check_response::ServingStatus;

/// Longest time the stack may take to start or stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// Kills the child if a test fails before it was stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The addresses the stack printed, read from its banner:
/// `  auth-service  http://127.0.0.1:PORT` and the like.
fn read_addresses(stdout: impl BufRead + Send + 'static) -> [String; 3] {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even after the addresses are found: closing the
        // pipe early would make the stack's next write fail.
        for line in stdout.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut found: [Option<String>; 3] = [None, None, None];
    let deadline = Instant::now() + PATIENCE;
    while found.iter().any(Option::is_none) {
        let line = receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the stack prints where each service listens");
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("auth-service") => 0,
            Some("task-service") => 1,
            Some("gateway") => 2,
            _ => continue,
        };
        if let Some(url) = words.next().filter(|word| word.starts_with("http://")) {
            found[slot] = Some(url.to_owned());
        }
    }
    found.map(|url| url.expect("found"))
}

#[tokio::test]
async fn the_run_command_serves_health_on_all_three_ports_and_stops_on_sigterm() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let child = Command::new(env!("CARGO_BIN_EXE_todo-stack"))
        .args(["--data-dir", &data.path().display().to_string()])
        .args([
            "--auth-listen",
            "127.0.0.1:0",
            "--tasks-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the stack binary starts");
    let mut running = Running(child);
    let stdout = BufReader::new(running.0.stdout.take().expect("piped"));
    let addresses = read_addresses(stdout);

    for url in &addresses {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = health(url, "").await;
            if status == Some(ServingStatus::Serving) {
                break;
            }
            assert!(Instant::now() < deadline, "{url} health stayed {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(data.path().join("auth.db").exists() && data.path().join("tasks.db").exists());

    let pid = running.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("wait works") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
