//! The one harness every integration test of the workspace uses: the real
//! services, started in this process on port 0 over fresh real databases,
//! and the clients a caller would use. Nothing is mocked; a test speaks to
//! the same `serve` the binaries run, over real sockets.
//!
//! Reading top-down:
//!
//! - [`database`]: [`Backend`] and [`TestDatabase`], a fresh SQLite file or
//!   PostgreSQL database per test; [`on_each_backend`] runs a test on each.
//! - [`server`]: [`Server`], any service's `serve` spawned on a listener,
//!   with its health, a channel, and a stop that waits for the drain.
//! - [`auth`] and [`tasks`]: each service with the configuration tests
//!   start from ([`auth_config`], [`task_config`]), and the calls tests make
//!   of its API; [`TaskStack`] is an auth-service issuing tokens and a ready
//!   task-service.
//! - [`gateway`]: [`GatewayStack`], all three services behind the gateway.
//! - [`bearer`]: [`Bearer`] and [`authorized`], the one way a test sends an
//!   access token.
//! - [`web`]: gRPC-Web clients, and the gRPC-Web wire format by hand.
//! - [`status`]: what a refused call says.
//! - [`proxy`]: [`TcpProxy`], to take a database "down" in the middle of a
//!   test.
//! - [`dump`]: every byte of a database as a thief would copy it (the
//!   SQLite files, or `pg_dump`).
//! - [`raw_grpc`]: gRPC bodies and HTTP/2 headers written by hand, for
//!   what no client library sends.
//! - [`replicas`]: [`ReplicaStack`], an auth-service and two task-service
//!   replicas following its session events, each restartable, and the
//!   checks that a session ended everywhere.
//! - [`auth_process`]: [`AuthProcess`], the auth-service binary as a process of
//!   its own, for `kill -9` and what it logs.
//! - [`smtp`]: [`SmtpSink`], a real SMTP server that keeps what it
//!   receives, the mails taken apart, and the auth-service's outbox.
//! - [`service_process`] and [`process_stack`]: the services as processes
//!   of their own ([`Process`], [`ProcessStack`]), for each binary's own
//!   metrics and span export; [`metrics`] scrapes `/metrics` ([`scrape`]),
//!   [`otlp`] receives spans ([`OtlpReceiver`]).
//! - [`tls`]: a test CA ([`tls::TestCa`]), certificates it signs, and HTTPS
//!   clients (gRPC, gRPC-Web) that trust it.
//!
//! Two decisions a reader must know. A configuration here is the service's
//! real defaults with only what every test needs changed (a manual clock
//! where tests move time; per-address and per-user limits raised so that
//! ordinary tests never meet them); a test of a limit sets its own. And a
//! stack owns its databases, so dropping it stops its services and removes
//! their data.

pub mod auth;
pub mod auth_process;
pub mod bearer;
pub mod database;
pub mod dump;
pub mod gateway;
pub mod metrics;
pub mod otlp;
pub mod process_stack;
mod proxy;
pub mod raw_grpc;
pub mod replicas;
pub mod server;
pub mod service_process;
pub mod smtp;
pub mod status;
pub mod tasks;
pub mod tls;
pub mod web;

use std::{future::Future, time::Duration};

pub use auth::{
    AuthServer, PASSWORD, User, auth_config, auth_defaults, auth_file_args, current_user,
    key_encryption_key_file, login, refresh, register, registration, request_reset, tokens,
    unique_email,
};
pub use auth_process::{AuthProcess, process_log};
pub use bearer::{Bearer, authorized, from_address};
pub use database::{Backend, POSTGRES_URL_VAR, TestDatabase};
pub use dump::dump;
pub use gateway::GatewayStack;
pub use metrics::{Scrape, scrape};
pub use otlp::{ExportedSpan, OtlpReceiver};
pub use process_stack::{ProcessOptions, ProcessStack};
pub use proxy::{TcpProxy, target as database_address, via as url_via};
pub use raw_grpc::{
    H2Outcome, HeldCall, flagged_frame, grpc_raw, h2_with_raw_header, hold_grpc_call,
};
pub use replicas::{
    FOLLOWING, REPLICAS, ReplicaStack, is_refused, mailed_token, next_task_event, open_watch,
    refused_everywhere_within, stored_tasks_of, stream_end, wait_following,
};
pub use server::{Server, bind, closed_port, connect, health, origin, wait_for_health};
pub use service_process::Process;
pub use smtp::{OutboxRow, ReceivedMail, SmtpSink, auth_config_mailing, mail_files, outbox};
pub use status::{bad_fields, code, retry_delay};
pub use tasks::{TaskClient, TaskServer, TaskStack, create, list_all, mask, task_config, titled};
pub use web::{GrpcWeb, grpc_web, grpc_web_from, raw_client};

/// How long anything in a test may take to become true: a service to
/// become ready, a stream to answer, a server to drain.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Longest any single call through the gateway may take before it counts
/// as a hang.
pub const STEP: Duration = Duration::from_secs(15);

/// Runs `test` once per backend (SQLite always, PostgreSQL when
/// `TEST_POSTGRES_URL` is set), one after the other.
pub async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in Backend::all() {
        eprintln!("-- on {backend}");
        test(backend).await;
    }
}

/// Polls `check` every 100 ms until it holds; panics after `within`,
/// saying what it waited for.
pub async fn eventually<F, Fut>(within: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
