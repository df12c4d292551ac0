//! Forwarding a call, bytes untouched, to the service that owns it.
//!
//! Each upstream is reached through one pooled HTTP/2 client (hyper-util's
//! `Client` with `http2_only`): a single multiplexed connection per service,
//! opened on first use, re-opened after a failure, kept alive with pings.
//! hyper never opens a second connection when that one's streams are all
//! taken (calls queue), so the gateway's own calls (health probes, the JWKS
//! fetch) go through a second client, a pool and connection of their own
//! (see stack.rs).
//! The request is rewritten only at the edges (absolute URI of the upstream,
//! metadata as described in [`crate::headers`]); the body streams through
//! without being decoded, so any RPC a service adds works with no change here.
//!
//! Failures become gRPC statuses, never hangs:
//!
//! - the upstream cannot be reached (connection refused, or not connected
//!   within `--connect-timeout`): `UNAVAILABLE`;
//! - it does not answer within `--request-timeout`: `DEADLINE_EXCEEDED`.
//!   The timer covers the time until the upstream sends its response
//!   headers. A unary call's headers come with its answer, so this bounds
//!   the whole call; a server stream (`WatchTasks`) sends its headers as it
//!   opens, so the stream is never cut short, with no list of streaming
//!   methods to keep up to date. The client's own `grpc-timeout` travels
//!   upstream and is enforced there too;
//! - the request body outgrew `--max-body-bytes`: `RESOURCE_EXHAUSTED`.

use std::{net::IpAddr, time::Duration};

use http::{Request, Response, Uri, Version, uri::PathAndQuery};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tonic::{Status, body::Body};

use crate::{
    Error, headers,
    limits::{Exceeded, LimitedBody, body_too_large},
};

/// A pooled HTTP/2 client: one connection per upstream origin.
pub type HttpClient = Client<HttpConnector, Body>;

/// How often an idle upstream connection is pinged, and how long a ping
/// may go unanswered before the connection is dropped and re-opened.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain-text HTTP/2 client that gives up connecting after `connect_timeout`.
pub fn http2_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector)
}

/// One service behind the gateway.
#[derive(Clone)]
pub struct Upstream {
    /// The service's name, for logs.
    name: &'static str,
    /// `http://host:port`, the origin calls are sent to.
    origin: Uri,
    client: HttpClient,
}

/// The bounds [`Upstream::forward`] applies to one call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Upstream {
    /// An upstream at `url`, which must be `http://host[:port]`.
    pub fn new(name: &'static str, url: &Uri, client: HttpClient) -> Result<Self, Error> {
        let invalid = || Error::InvalidUpstream(url.to_string());
        if url.scheme_str() != Some("http") {
            return Err(invalid());
        }
        let authority = url.authority().ok_or_else(invalid)?.clone();
        let origin = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|_| invalid())?;
        Ok(Self {
            name,
            origin,
            client,
        })
    }

    /// `http://host:port` of this upstream.
    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// The client this upstream's calls go through.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Sends `request` upstream and returns its response, or the status
    /// the gateway answers instead.
    pub async fn forward(
        &self,
        request: Request<Body>,
        peer: Option<IpAddr>,
        limits: CallLimits,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        // Only the path travels: a query string is never forwarded.
        let path = PathAndQuery::try_from(parts.uri.path())
            .unwrap_or_else(|_| PathAndQuery::from_static("/"));
        let mut uri = self.origin.clone().into_parts();
        uri.path_and_query = Some(path);
        parts.uri = match Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(error) => return crate::status_response(serving::status::internal(&error)),
        };
        parts.version = Version::HTTP_2;
        headers::prepare_for_upstream(&mut parts.headers, peer);

        let exceeded = Exceeded::default();
        let body = Body::new(LimitedBody::new(
            body,
            limits.max_body_bytes,
            exceeded.clone(),
        ));
        let call = self.client.request(Request::from_parts(parts, body));
        let outcome = tokio::time::timeout(limits.request_timeout, call).await;
        if exceeded.get() {
            return crate::status_response(body_too_large());
        }
        match outcome {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(error)) => {
                tracing::warn!(upstream = self.name, error = %error_chain(&error), "upstream call failed");
                crate::status_response(Status::unavailable(format!(
                    "{} is temporarily unavailable; retry later",
                    self.name
                )))
            }
            Err(_) => {
                tracing::warn!(upstream = self.name, timeout = ?limits.request_timeout, "upstream did not answer in time");
                crate::status_response(Status::deadline_exceeded(format!(
                    "{} did not answer in time",
                    self.name
                )))
            }
        }
    }
}

/// An error with its causes, for a log line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> HttpClient {
        http2_client(Duration::from_secs(1))
    }

    #[tokio::test]
    async fn upstream_urls_must_be_plain_http_origins() {
        let upstream = Upstream::new(
            "auth",
            &Uri::from_static("http://127.0.0.1:50051"),
            client(),
        )
        .unwrap();
        assert_eq!(
            upstream.origin(),
            &Uri::from_static("http://127.0.0.1:50051/")
        );
        assert!(
            Upstream::new(
                "auth",
                &Uri::from_static("https://auth.example:443"),
                client()
            )
            .is_err()
        );
        assert!(Upstream::new("auth", &Uri::from_static("/relative"), client()).is_err());
    }
}
