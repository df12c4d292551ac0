//! The whole system as it runs in production: the auth-service, the
//! task-service and the gateway as three processes (see
//! [`crate::service_process`]), each on port 0 with its `/metrics` on
//! port 0 too, logging JSON, and, when asked, exporting spans over OTLP.
//! Where each listens is read from what it logged.

use std::{net::SocketAddr, process::Command};

use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    Backend, PATIENCE, TestDatabase, auth_file_args,
    service_process::{Process, service_command},
    wait_for_health,
};

/// What a [`ProcessStack`] is started with beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// An OTLP/gRPC collector all three export their spans to.
    pub otlp_endpoint: Option<String>,
    /// `RUST_LOG` of all three (`info` without it).
    pub rust_log: Option<String>,
    /// More flags for the gateway.
    pub gateway_args: Vec<String>,
}

/// Three processes; all are killed when it is dropped, and their
/// databases removed.
pub struct ProcessStack {
    pub auth: Process,
    pub tasks: Process,
    pub gateway: Process,
    pub gateway_address: SocketAddr,
    pub auth_address: SocketAddr,
    pub tasks_address: SocketAddr,
    pub auth_metrics: SocketAddr,
    pub tasks_metrics: SocketAddr,
    pub gateway_metrics: SocketAddr,
    _auth_database: TestDatabase,
    _tasks_database: TestDatabase,
}

/// Spans leave a process in batches; a short delay gets them to a test
/// sooner (read by the OpenTelemetry SDK).
const SPAN_BATCH_DELAY_MS: &str = "100";

impl ProcessStack {
    /// Starts the services on fresh databases of `backend`, then the
    /// gateway binary at `gateway_binary` in front of them; returns once
    /// the gateway reports SERVING.
    pub async fn start(backend: Backend, gateway_binary: &str, options: ProcessOptions) -> Self {
        let auth_database = backend.fresh().await;
        let tasks_database = backend.fresh().await;
        let rust_log = options.rust_log.as_deref().unwrap_or("info");
        let common = |mut command: Command| {
            command.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
            if let Some(endpoint) = &options.otlp_endpoint {
                command.args(["--otlp-endpoint", endpoint]);
            }
            command.env("OTEL_BSP_SCHEDULE_DELAY", SPAN_BATCH_DELAY_MS);
            command
        };

        let mut command = common(service_command("auth-service"));
        command
            .args(["--database-url", &auth_database.url])
            // The gateway's x-forwarded-for is believed, as in production.
            .args(["--trusted-proxy", "127.0.0.1/32"])
            .args(auth_file_args(&auth_database));
        let auth = Process::spawn("auth-service", command, rust_log);
        let auth_address = auth.address("auth-service listening").await;
        let auth_metrics = auth.address("metrics listening").await;

        let mut command = common(service_command("task-service"));
        command
            .args(["--database-url", &tasks_database.url])
            .args(["--auth-url", &format!("http://{auth_address}")]);
        let tasks = Process::spawn("task-service", command, rust_log);
        let tasks_address = tasks.address("task-service listening").await;
        let tasks_metrics = tasks.address("metrics listening").await;

        let mut command = common(Command::new(gateway_binary));
        command
            .args(["--auth-url", &format!("http://{auth_address}")])
            .args(["--tasks-url", &format!("http://{tasks_address}")])
            .args(&options.gateway_args);
        let gateway = Process::spawn("gateway", command, rust_log);
        let gateway_address = gateway.address("gateway listening").await;
        let gateway_metrics = gateway.address("metrics listening").await;

        let stack = Self {
            auth,
            tasks,
            gateway,
            gateway_address,
            auth_address,
            tasks_address,
            auth_metrics,
            tasks_metrics,
            gateway_metrics,
            _auth_database: auth_database,
            _tasks_database: tasks_database,
        };
        wait_for_health(&stack.url(), "", ServingStatus::Serving, PATIENCE).await;
        stack
    }

    /// `http://127.0.0.1:<port>` of the gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.gateway_address)
    }
}
