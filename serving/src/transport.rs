//! The tonic server every service runs, with its limits in one place.
//!
//! HTTP/2 limits are set explicitly rather than trusting defaults (some tonic
//! versions pass no limit for locally reset streams, the "MadeYouReset"
//! attack). Graceful shutdown is bounded: when the shutdown token fires the
//! server stops accepting, in-flight calls get `drain` to finish, and then
//! the server returns regardless, so an open stream cannot hang a rollout.

use std::{future::Future, net::SocketAddr, time::Duration};

use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    transport::{Server, server::TcpIncoming},
};

/// Transport limits shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,
    /// HTTP/2 concurrent streams allowed per connection. The gateway
    /// multiplexes all its callers (open WatchTasks streams included) over
    /// one connection per service, so this must stay above the gateway's
    /// `--max-concurrent-requests`, or calls would queue behind streams.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Longest time one unary call may take before it is cancelled.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How long in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for TransportArgs {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// See [`TransportArgs::max_concurrent_streams`].
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 2048;

/// HTTP/2 header list limit: generous for a bearer token, small enough that
/// header floods are cheap to refuse.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a peer may make us reset before the connection is closed.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 64;

/// A server builder with every transport limit set.
///
/// The per-call timeout is not set here: it would also cut long-lived
/// streams; services apply it to unary calls with a layer of their own.
pub fn server(args: &TransportArgs) -> Server {
    Server::builder()
        .max_concurrent_streams(args.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
}

/// The incoming connection stream of a bound listener (so tests can bind
/// port 0 and read the address first). Peer addresses reach requests.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Binds `addr`, naming it in the error so a taken port is obvious.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    })
}

/// Runs `serve` (a tonic `serve_with_incoming_shutdown` future whose own
/// shutdown signal is `shutdown.cancelled()`) and bounds the drain: once
/// `shutdown` fires, calls still open after `grace` are abandoned.
pub async fn run_with_drain<F, E>(
    serve: F,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "drain time exceeded; abandoning open calls");
            Ok(())
        }
    }
}

/// tonic refuses a message over `max_decoding_message_size` with
/// `OUT_OF_RANGE`; the gRPC spec (and clients' retry logic) expects
/// `RESOURCE_EXHAUSTED` for that. This rewrites exactly that refusal,
/// wherever tonic put it (headers of a trailers-only response, or the
/// trailers), and nothing else: no handler of ours answers `OUT_OF_RANGE`
/// with tonic's wording.
pub fn oversized_message_is_resource_exhausted(
    response: http::Response<Body>,
) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    rewrite_oversized(&mut parts.headers);
    let body = body.map_frame(|mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            rewrite_oversized(trailers);
        }
        frame
    });
    http::Response::from_parts(parts, Body::new(body))
}

fn rewrite_oversized(headers: &mut http::HeaderMap) {
    const TONIC_TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";
    let is_too_large = headers
        .get("grpc-status")
        .is_some_and(|status| status == "11")
        && headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| {
                message.starts_with(TONIC_TOO_LARGE) || message.starts_with("Error, decoded")
            });
    if is_too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("message%20larger%20than%20the%20server%20accepts"),
        );
    }
}

type MapResponse = fn(http::Response<Body>) -> http::Response<Body>;

/// [`oversized_message_is_resource_exhausted`] as a layer.
pub fn oversized_message_layer() -> tower::util::MapResponseLayer<MapResponse> {
    tower::util::MapResponseLayer::new(oversized_message_is_resource_exhausted as MapResponse)
}
