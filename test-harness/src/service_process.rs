//! Services as processes of their own, for what one process cannot show:
//! each binary's own `/metrics`, and spans exported by each process to
//! its own OTLP exporter (the tracing subscriber and the metrics registry
//! are global to a process, so three services in one process share them).
//!
//! A [`Process`] is any program started with `--log-format json`, whose
//! log lines are kept so a test can read what it logged (the addresses it
//! bound on port 0, the trace id of a call). It is killed when dropped.
//!
//! The gateway's tests run the real `gateway` binary, but Cargo builds no
//! other package's binaries for them. So the auth-service and the
//! task-service run as *the test binary itself, started again*: a test file
//! whose `main` is [`main`] (`harness = false` in Cargo.toml; libtest-mimic
//! runs its tests as libtest would) becomes the service that
//! [`SERVICE_VAR`] names when started with it, and parses the flags as the
//! service's binary does (see [`serve_as`]). Such a process exits when its
//! standard input closes, so none outlives the test that started it.

use std::{
    future::Future,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    process::{Child, Command, ExitCode, Stdio},
    sync::{Arc, Mutex, PoisonError},
};

use clap::Parser;
use libtest_mimic::{Arguments, Trial};
use serde_json::Value;
use serving::telemetry::LogArgs;

use crate::{PATIENCE, eventually};

/// The environment variable that makes a test binary a service process:
/// `auth-service` or `task-service`.
pub const SERVICE_VAR: &str = "TEST_HARNESS_SERVICE";

/// The `main` of a test file whose tests start service processes: serves
/// as the service [`SERVICE_VAR`] names when started as one, else runs
/// `tests` as libtest would (same flags, same output).
pub fn main(tests: Vec<Trial>) -> ExitCode {
    match std::env::var(SERVICE_VAR) {
        Ok(service) => serve_as(&service),
        Err(_) => libtest_mimic::run(&Arguments::from_args(), tests).exit_code(),
    }
}

/// An async test named `name` (a sentence), run on a runtime of its own.
pub fn test<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime")
            .block_on(test());
        Ok(())
    })
}

/// The flags of the auth-service binary (see auth-service/src/main.rs).
#[derive(Parser)]
struct AuthCli {
    #[command(flatten)]
    config: auth_service::Config,
    #[command(flatten)]
    logs: LogArgs,
    #[arg(long)]
    otlp_endpoint: Option<String>,
}

/// The flags of the task-service binary (see task-service/src/main.rs).
#[derive(Parser)]
struct TaskCli {
    #[command(flatten)]
    config: task_service::Config,
    #[command(flatten)]
    logs: LogArgs,
    #[arg(long)]
    otlp_endpoint: Option<String>,
}

/// Does what the binary of `service` does with the process's flags:
/// logging (and span export) set up, then `serve` until SIGTERM, or until
/// standard input closes (the test is over).
fn serve_as(service: &str) -> ExitCode {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let served = runtime.block_on(async {
        let shutdown = serving::shutdown::on_signal();
        match service {
            "auth-service" => {
                let cli = AuthCli::parse();
                let _tracing = cli.logs.init("auth-service", cli.otlp_endpoint.as_deref());
                let listener = serving::transport::bind(cli.config.listen).await?;
                auth_service::serve(cli.config, listener, shutdown).await
            }
            "task-service" => {
                let cli = TaskCli::parse();
                let _tracing = cli.logs.init("task-service", cli.otlp_endpoint.as_deref());
                let listener = serving::transport::bind(cli.config.listen).await?;
                task_service::serve(cli.config, listener, shutdown).await
            }
            other => anyhow::bail!("{SERVICE_VAR}={other:?} names no service"),
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{service}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command that starts the test binary again as `service` (see
/// [`main`]); its flags are the service binary's.
pub fn service_command(service: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary has a path"));
    command.env(SERVICE_VAR, service);
    command
}

/// A running program whose output lines are kept; killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with its output kept, logging as JSON at
    /// `rust_log` (`RUST_LOG` syntax).
    pub fn spawn(name: &str, mut command: Command, rust_log: &str) -> Self {
        let mut child = command
            .args(["--log-format", "json"])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        for output in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let lines = lines.clone();
            // Reads to the end: a closed pipe would fail the process's
            // next write.
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(Result::ok) {
                    lines
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The test binary started again as `service` (see [`main`]), with
    /// `args` as its flags.
    pub fn service(service: &str, args: &[String], rust_log: &str) -> Self {
        let mut command = service_command(service);
        command.args(args);
        Self::spawn(service, command, rust_log)
    }

    /// Kills the process now (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every JSON line logged so far.
    pub fn logs(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first line logged with `message`, waited for up to [`PATIENCE`].
    pub async fn logged(&self, message: &str) -> Value {
        let find = || {
            self.logs()
                .into_iter()
                .find(|line| line["message"] == message)
        };
        eventually(PATIENCE, &format!("{} logs {message:?}", self.name), || {
            let found = find().is_some();
            async move { found }
        })
        .await;
        find().expect("found")
    }

    /// The `address` of the line logged with `message`: where the process
    /// listens (written `127.0.0.1:PORT` or `Some(127.0.0.1:PORT)`).
    pub async fn address(&self, message: &str) -> SocketAddr {
        let line = self.logged(message).await;
        let address = line["address"].as_str().unwrap_or_default();
        address
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .parse()
            .unwrap_or_else(|_| panic!("{}: {message:?} names no address: {line}", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            let start = lines.len().saturating_sub(40);
            eprintln!("-- last lines of {}:", self.name);
            for line in &lines[start..] {
                eprintln!("{line}");
            }
        }
    }
}
