//! How every process of the system serves gRPC, written once.
//!
//! Each service crate exposes `serve(config, listener, shutdown)`; this crate
//! gives them the pieces that must not drift apart between services:
//!
//! - [`transport`]: the tonic server with HTTP/2 limits set explicitly, and a
//!   bounded drain on shutdown;
//! - [`health`]: `grpc.health.v1` flipped by database reachability;
//! - [`reflection`]: `grpc.reflection` v1 and v1alpha over both APIs;
//! - [`database`]: SQLite (WAL, busy timeout, one writer) or PostgreSQL pools
//!   from a URL, and which driver errors mean "unavailable";
//! - [`postgres_pool`]: PostgreSQL connections pooled without a round trip
//!   on release;
//! - [`migrations`]: each service's schema migrations, compiled in;
//! - [`sql`]: one SQL text for both backends: binding, rows, transactions;
//! - [`metrics`]: Prometheus metrics and the RPC metrics layer;
//! - [`status`]: `INVALID_ARGUMENT` with `BadRequest`, `RESOURCE_EXHAUSTED`
//!   with `RetryInfo`, and an `INTERNAL` that leaks nothing;
//! - [`telemetry`]: tracing set-up and the per-RPC span;
//! - [`trace_context`]: W3C `traceparent`, and spans exported over OTLP;
//! - [`address`]: client addresses as per-address limits count them;
//! - [`clock`]: the time, injectable in tests;
//! - [`config`]: flag defaults, made one way for every binary;
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token.

pub mod address;
pub mod clock;
pub mod config;
pub mod database;
pub mod health;
pub mod metrics;
pub mod migrations;
pub mod postgres_pool;
pub mod reflection;
pub mod shutdown;
pub mod sql;
pub mod status;
pub mod telemetry;
pub mod trace_context;
pub mod transport;

pub use tokio_util::sync::CancellationToken;
