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
    /// Installs the global subscriber in the chosen format, exporting spans
    /// to `otlp_endpoint` (OTLP/gRPC) as `service` when one is given (see
    /// [`init`]).
    pub fn init(&self, service: &'static str, otlp_endpoint: Option<&str>) -> Tracing {
        init(self.log_format, service, otlp_endpoint)
    }
}

/// What must outlive the process's work: the span exporter, flushed when
/// this is dropped.
#[must_use = "dropping it stops the span export"]
pub struct Tracing(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("could not flush the last spans: {error}");
        }
    }
}

/// Installs the global subscriber: logs in `format`, and spans exported over
/// OTLP to `otlp_endpoint` when given (see [`crate::trace_context`]). Safe
/// to call more than once (later calls change nothing), so an all-in-one
/// process can start several services. Must run inside the Tokio runtime.
pub fn init(format: LogFormat, service: &'static str, otlp_endpoint: Option<&str>) -> Tracing {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_endpoint.and_then(|endpoint| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build();
        match exporter {
            Ok(exporter) => Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_span_processor(
                        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                            exporter,
                            opentelemetry_sdk::runtime::Tokio,
                        )
                        .build(),
                    )
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service)
                            .build(),
                    )
                    .build(),
            ),
            Err(error) => {
                eprintln!("cannot export spans to {endpoint}: {error}");
                None
            }
        }
    });
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(spans);
    let installed = match format {
        // Colour only for a person at a terminal, never escape codes in a file.
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    if installed.is_ok() && provider.is_some() {
        crate::trace_context::set_exporting();
    }
    Tracing(provider)
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

/// The span of one RPC:
/// `rpc{method=/auth.v1.AuthService/Login request_id=... trace_id=...}`,
/// the child of the caller's span when spans are exported (see
/// [`crate::trace_context`]).
pub fn rpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let path = request.uri().path();
    let span = tracing::info_span!(
        "rpc",
        method = %path,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if crate::trace_context::exporting() {
        // Only for the exported span; the log lines need not repeat them.
        span.record("otel.name", path);
        span.record("otel.kind", "server");
    }
    let trace_id = crate::trace_context::adopt(&span, request.headers());
    span.record("trace_id", tracing::field::display(trace_id));
    span
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
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
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
