//! The README's run command (`cargo run` at the root, i.e. the `todo-stack`
//! binary) started as a child process under the usual umask 022: all three
//! services answer a health check, every file and folder it made in its
//! data folder is private to its user, and SIGTERM stops them with exit
//! status 0.

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
    // Made by the stack, as `./data` is on a first `cargo run`.
    let data_dir = data.path().join("data");
    // `exec` keeps the pid, so SIGTERM below reaches the stack itself.
    let child = Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_todo-stack"))
        .args(["--data-dir", &data_dir.display().to_string()])
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
    assert!(data_dir.join("auth.db").exists() && data_dir.join("tasks.db").exists());
    let made = private_files(&data_dir);
    // (The mail folder appears with the first mail; mail_content.rs
    // checks its modes.)
    for name in ["auth.db", "auth.db-wal", "tasks.db", "key-encryption-key"] {
        assert!(
            made.iter().any(|path| path.ends_with(name)),
            "{name} was made: {made:?}"
        );
    }

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

/// Every file and folder under `folder` (and `folder` itself), asserting
/// that none is readable, writable or searchable by group or others.
fn private_files(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(path) = pending.pop() {
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {:o}: open to group or others",
            path.display(),
            mode & 0o777
        );
        if path.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("a readable folder")
                    .map(|entry| entry.expect("an entry").path()),
            );
        }
        found.push(path);
    }
    found
}
