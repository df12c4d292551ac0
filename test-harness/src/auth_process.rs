//! The auth-service as a separate process: its real binary, for what only a
//! process shows (a `kill -9` between two steps, what it logs to stdout
//! and stderr, its exit status).
//!
//! Cargo gives the binary's path only to the auth-service's own tests
//! (`env!("CARGO_BIN_EXE_auth-service")`), so they pass it in. Both output
//! streams go to one log file in the database's private folder, appended
//! across restarts, so a test reads everything every run of it printed.

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use todo_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{PATIENCE, TestDatabase, auth_file_args, closed_port, connect, wait_for_health};

/// The log file of the auth-service processes on a database.
const LOG_FILE: &str = "auth-service.log";

/// A running auth-service binary; killed when dropped.
pub struct AuthProcess {
    child: Child,
    port: u16,
}

impl AuthProcess {
    /// Starts `program` on `database` (with [`auth_file_args`]) on a free
    /// port, with `args` besides, logging at `rust_log`; returns once it
    /// reports `SERVING`.
    pub async fn start(
        program: &str,
        database: &TestDatabase,
        args: &[String],
        rust_log: &str,
    ) -> Self {
        let port = closed_port().await.port();
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(database.path(LOG_FILE))
            .expect("open the process log");
        let stderr = stdout.try_clone().expect("share the process log");
        let child = Command::new(program)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &database.url])
            .args(auth_file_args(database))
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the auth-service binary");
        let process = Self { child, port };
        wait_for_health(&process.url(), "", ServingStatus::Serving, PATIENCE).await;
        process
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(connect(&self.url()).await)
    }

    /// `kill -9`: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap the process");
    }

    /// SIGTERM, then waits (up to [`PATIENCE`]) for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(exit) = self.child.try_wait().expect("the process's status") {
                return exit;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIGTERM did not stop the process"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for AuthProcess {
    fn drop(&mut self) {
        // Nothing happens if it was already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the auth-service processes on `database` printed so far
/// (also after they exited).
pub fn process_log(database: &TestDatabase) -> String {
    read(&database.path(LOG_FILE))
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
