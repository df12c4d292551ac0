//! Logging: human-readable by default, JSON on request, filtered by
//! `RUST_LOG` (default `info`). Every RPC runs in one span carrying its
//! request id and method; tower-http's gRPC trace layer records status and
//! latency when it ends. Nothing secret is ever a span field: the request id
//! and path are the only request data recorded here.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls
/// do nothing), so an all-in-one process can start several services.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Human => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}

/// The span of one RPC: `rpc{method=/auth.v1.AuthService/Login request_id=...}`.
pub fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("rpc", method = %request.uri().path(), request_id = %request_id)
}
