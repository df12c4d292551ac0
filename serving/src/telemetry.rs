//! Logging: human-readable by default, JSON on request, filtered by
//! `RUST_LOG` (default `info`). Every RPC runs in one span carrying its
//! request id and method; tower-http's gRPC trace layer records status and
//! latency when it ends. Nothing secret is ever a span field: the request id
//! and path are the only request data recorded here.

use std::time::Duration;

use tower_http::{
    classify::{GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier},
    trace::{
        DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, MakeSpan, OnFailure,
        TraceLayer,
    },
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The `--log-format` flag, the same on every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log as human-readable lines or as JSON objects (filter with
    /// `RUST_LOG`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber in the chosen format (see [`init`]).
    pub fn init(&self) {
        init(self.log_format);
    }
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

/// Longest client-chosen request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `x-request-id` may be kept and logged: a short token
/// of `[A-Za-z0-9-_.]`, which cannot forge or stretch a log line.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Removes a client's `x-request-id` unless it is one [`is_valid_request_id`]
/// accepts (or there are several), so the id layer below makes a fresh one.
pub fn drop_unsafe_request_id<B>(mut request: http::Request<B>) -> http::Request<B> {
    let headers = request.headers_mut();
    let mut values = headers.get_all("x-request-id").iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => return request,
        (Some(value), None) => is_valid_request_id(value.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove("x-request-id");
    }
    request
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

/// [`rpc_span`] as a tower-http `MakeSpan` for any body type.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpan;

impl<B> MakeSpan<B> for RpcSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        rpc_span(request)
    }
}

/// Logs a failed RPC at a level that matches whose fault it is: a client's
/// mistake (bad argument, bad token, not found, throttled) is routine and
/// logged at INFO; a server-side failure is logged at ERROR.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcFailure;

impl OnFailure<GrpcFailureClass> for RpcFailure {
    fn on_failure(&mut self, failure: GrpcFailureClass, latency: Duration, _span: &tracing::Span) {
        let latency_ms = latency.as_millis() as u64;
        match failure {
            GrpcFailureClass::Code(code) => {
                let code = tonic::Code::from_i32(code.get());
                let server_fault = matches!(
                    code,
                    tonic::Code::Internal
                        | tonic::Code::Unknown
                        | tonic::Code::DataLoss
                        | tonic::Code::Unavailable
                );
                if server_fault {
                    tracing::error!(?code, latency_ms, "rpc failed");
                } else {
                    tracing::info!(?code, latency_ms, "rpc refused");
                }
            }
            GrpcFailureClass::Error(error) => tracing::error!(%error, latency_ms, "rpc failed"),
        }
    }
}

/// The per-RPC trace layer every server uses: one span per call named by
/// [`RpcSpan`], status and latency logged when it ends.
pub type RpcTraceLayer = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    RpcSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    RpcFailure,
>;

pub fn rpc_trace_layer() -> RpcTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(RpcSpan)
        .on_failure(RpcFailure)
}
