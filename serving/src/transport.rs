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
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 2048)]
    pub max_concurrent_streams: u32,
    /// Longest time one unary call may take before it is cancelled.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How long in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Default for TransportArgs {
    /// The flags' documented defaults.
    fn default() -> Self {
        crate::config::defaults()
    }
}

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

/// Why TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("a certificate and its key go together")]
    Half,
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, TlsFilesError> {
    std::fs::read(path).map_err(|source| TlsFilesError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Server TLS from PEM files, or `None` without them. With `client_ca`,
/// every client must present a certificate that CA signed (mutual TLS:
/// how services can know that a caller is another service of theirs).
pub fn server_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    client_ca: Option<&std::path::Path>,
) -> Result<Option<tonic::transport::ServerTlsConfig>, TlsFilesError> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        _ => return Err(TlsFilesError::Half),
    };
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read_pem(cert)?, read_pem(key)?),
    );
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read_pem(ca)?));
    }
    Ok(Some(tls))
}

/// A channel endpoint for `url`: over TLS when it is `https://`, trusting
/// `ca` (a PEM file), and presenting `identity` (certificate and key) when
/// the server asks for one.
pub fn endpoint(
    url: &str,
    ca: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<tonic::transport::Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
    if !url.starts_with("https:") {
        return Ok(endpoint);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(ca)?));
    }
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read_pem(cert)?,
            read_pem(key)?,
        ));
    }
    Ok(endpoint.tls_config(tls)?)
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

/// Largest `grpc-message` (decoded) a service sends; longer ones are cut.
const MAX_STATUS_MESSAGE_BYTES: usize = 1024;
/// Largest status details (`grpc-status-details-bin`, decoded) a service
/// sends; larger ones are dropped. Far below the 16 KiB header lists the
/// services and the gateway accept, so a status never costs a connection.
const MAX_STATUS_DETAILS_BYTES: usize = 8 * 1024;

/// What tonic says, as `INTERNAL`, when a *request* cannot be read: a
/// compression flag that is not 0 or 1, a body that does not inflate, a
/// truncated frame, no message at all, bytes that are not the protobuf
/// message. Each is the client's mistake.
const UNREADABLE_REQUEST: [&str; 6] = [
    "protocol error: received message with",
    "Error decompressing:",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "failed to decode Protobuf message",
    "Message compressed with",
];

/// Makes every status a service answers one a client can be sent:
///
/// - a message over `max_decoding_message_size` is `RESOURCE_EXHAUSTED`
///   (tonic says `OUT_OF_RANGE`; the gRPC spec and clients' retry logic
///   expect the former, checklist G1);
/// - a request tonic could not read is `INVALID_ARGUMENT` with a fixed
///   message, not an `INTERNAL` with library text logged as a server fault;
/// - any message or details past [`MAX_STATUS_MESSAGE_BYTES`] and
///   [`MAX_STATUS_DETAILS_BYTES`] are cut (checklist I1), whatever put them
///   there.
///
/// Statuses travel in the headers (trailers-only answers) or the trailers;
/// both are looked at. `OK` costs one comparison.
pub fn tidy_statuses(response: http::Response<Body>) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    tidy_status(&mut parts.headers);
    let body = body.map_frame(|mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            tidy_status(trailers);
        }
        frame
    });
    http::Response::from_parts(parts, Body::new(body))
}

fn tidy_status(headers: &mut http::HeaderMap) {
    if headers
        .get("grpc-status")
        .is_none_or(|code| code.as_bytes() == b"0")
    {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let message = status.message();
    let replacement = match status.code() {
        tonic::Code::OutOfRange
            if message.starts_with("Error, decoded message length too large") =>
        {
            tonic::Status::resource_exhausted("message larger than the server accepts")
        }
        tonic::Code::Internal if UNREADABLE_REQUEST.iter().any(|p| message.starts_with(p)) => {
            tracing::info!(reason = message, "unreadable request message");
            tonic::Status::invalid_argument(
                "the request message cannot be read (framing, compression or encoding)",
            )
        }
        _ if message.len() > MAX_STATUS_MESSAGE_BYTES
            || status.details().len() > MAX_STATUS_DETAILS_BYTES =>
        {
            tracing::error!(
                code = ?status.code(),
                message_bytes = message.len(),
                details_bytes = status.details().len(),
                "a status too large to send; cut"
            );
            let mut end = MAX_STATUS_MESSAGE_BYTES.min(message.len());
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let details = if status.details().len() > MAX_STATUS_DETAILS_BYTES {
                bytes::Bytes::new()
            } else {
                bytes::Bytes::copy_from_slice(status.details())
            };
            tonic::Status::with_details(status.code(), &message[..end], details)
        }
        _ => return,
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if replacement.add_header(headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
}

type MapResponse = fn(http::Response<Body>) -> http::Response<Body>;

/// [`tidy_statuses`] as a layer: the innermost one of every service, so the
/// trace layer above logs the status the client really gets.
pub fn tidy_status_layer() -> tower::util::MapResponseLayer<MapResponse> {
    tower::util::MapResponseLayer::new(tidy_statuses as MapResponse)
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    fn tidied(status: &Status) -> Status {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        tidy_status(&mut headers);
        Status::from_header_map(&headers).unwrap()
    }

    #[test]
    fn an_oversized_message_is_resource_exhausted() {
        let status = tidied(&Status::out_of_range(
            "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn unreadable_requests_are_invalid_argument_with_a_fixed_message() {
        for message in [
            "protocol error: received message with invalid compression flag: 2 (valid flags are 0 and 1), while sending request",
            "Error decompressing: invalid gzip header, while sending request",
            "Missing request message.",
            "failed to decode Protobuf message: buffer underflow",
        ] {
            let status = tidied(&Status::internal(message));
            assert_eq!(status.code(), Code::InvalidArgument, "{message}");
            assert!(!status.message().contains("gzip"));
        }
        // Our own INTERNAL stays what it is.
        assert_eq!(
            tidied(&Status::internal("internal error")).code(),
            Code::Internal
        );
    }

    #[test]
    fn long_messages_and_details_are_cut() {
        let status = tidied(&Status::with_details(
            Code::InvalidArgument,
            "é".repeat(10_000),
            bytes::Bytes::from(vec![7u8; 100_000]),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
        assert!(status.details().is_empty());
        let small = Status::with_details(
            Code::NotFound,
            "task not found",
            bytes::Bytes::from_static(b"x"),
        );
        assert_eq!(tidied(&small).details(), small.details());
    }
}
