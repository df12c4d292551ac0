//! Forwarding a call, bytes untouched, to the service that owns it.
//!
//! Each upstream is reached through a pooled HTTP/2 client (hyper-util's
//! `Client` with `http2_only`): one multiplexed connection per upstream
//! address, opened on first use, re-opened after a failure, kept alive with
//! pings. hyper never opens a second connection when that one's streams are
//! all taken (calls queue), so the gateway's own calls (health probes, the
//! JWKS fetch) go through a second client, a pool and connections of their
//! own (see stack.rs).
//!
//! Replicas: gRPC's long-lived connections would pin every call to one pod
//! behind an L4 load balancer, so the gateway balances itself (DESIGN.md).
//! An upstream's host name is resolved again every [`RESOLVE_INTERVAL`],
//! and calls go round-robin over the addresses it stands for, each with its
//! own connection: behind a Kubernetes headless Service (one name, an
//! address per ready pod) every replica takes calls, and replicas that come
//! and go are followed. An address that cannot be connected to is left out
//! until the next resolution. An IP address in the URL is used as given.
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

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

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

/// A pooled HTTP/2 client: one connection per upstream address.
pub type HttpClient = Client<HttpConnector, Body>;

/// How often an idle upstream connection is pinged, and how long a ping
/// may go unanswered before the connection is dropped and re-opened.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an upstream's host name is resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

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
    /// The addresses calls are spread over.
    endpoints: Arc<Endpoints>,
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
        let authority = url.authority().ok_or_else(invalid)?;
        let origin = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| invalid())?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let to_resolve = match host.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some((host.to_owned(), authority.port_u16().unwrap_or(80))),
        };
        Ok(Self {
            name,
            endpoints: Arc::new(Endpoints::new(origin, to_resolve)),
            client,
        })
    }

    /// `http://address:port/` of the replica the next call goes to.
    pub fn origin(&self) -> Uri {
        self.endpoints.pick()
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
        let origin = self.endpoints.pick();
        let mut uri = origin.clone().into_parts();
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
                tracing::warn!(upstream = self.name, %origin, error = %error_chain(&error), "upstream call failed");
                if error.is_connect() {
                    self.endpoints.forget(&origin);
                }
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

/// The addresses behind an upstream, taken in turn.
struct Endpoints {
    /// The host name and port to resolve; `None` for an IP address.
    to_resolve: Option<(String, u16)>,
    state: Mutex<Resolved>,
    /// Round-robin position.
    next: AtomicUsize,
}

struct Resolved {
    /// `http://address:port/` per address; never empty. Until the first
    /// resolution, the configured origin (the client resolves it itself).
    origins: Arc<[Uri]>,
    resolved_at: Option<Instant>,
    resolving: bool,
}

impl Endpoints {
    fn new(configured: Uri, to_resolve: Option<(String, u16)>) -> Self {
        Self {
            to_resolve,
            state: Mutex::new(Resolved {
                origins: Arc::from([configured]),
                resolved_at: None,
                resolving: false,
            }),
            next: AtomicUsize::new(0),
        }
    }

    /// The origin for the next call. When the last resolution is older
    /// than [`RESOLVE_INTERVAL`], a new one starts in the background; no
    /// call waits for it.
    fn pick(self: &Arc<Self>) -> Uri {
        let origins = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let stale = state
                .resolved_at
                .is_none_or(|at| at.elapsed() >= RESOLVE_INTERVAL);
            if let Some((host, port)) = &self.to_resolve
                && stale
                && !state.resolving
            {
                state.resolving = true;
                let (endpoints, host, port) = (self.clone(), host.clone(), *port);
                tokio::spawn(async move {
                    let found = tokio::net::lookup_host((host.as_str(), port)).await;
                    endpoints.resolved(&host, found.map(Iterator::collect));
                });
            }
            state.origins.clone()
        };
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        origins[turn % origins.len()].clone()
    }

    /// Takes in a resolution; a failed or empty one keeps the addresses
    /// known so far, so a DNS hiccup does not take the upstream away.
    fn resolved(&self, host: &str, found: std::io::Result<Vec<SocketAddr>>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.resolving = false;
        state.resolved_at = Some(Instant::now());
        match found {
            Ok(mut addresses) if !addresses.is_empty() => {
                addresses.sort_unstable();
                addresses.dedup();
                let origins: Arc<[Uri]> = addresses.iter().filter_map(origin_of).collect();
                if !origins.is_empty() && origins != state.origins {
                    tracing::info!(host, addresses = ?addresses, "upstream addresses changed");
                    state.origins = origins;
                }
            }
            Ok(_) => tracing::warn!(
                host,
                "upstream name resolved to no address; keeping the last ones"
            ),
            Err(error) => {
                tracing::warn!(host, %error, "cannot resolve the upstream name; keeping the last addresses");
            }
        }
    }

    /// Leaves out an address that refused a connection, until the next
    /// resolution brings it back. The last address is always kept.
    fn forget(&self, origin: &Uri) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.origins.len() > 1 && state.origins.contains(origin) {
            state.origins = state
                .origins
                .iter()
                .filter(|o| *o != origin)
                .cloned()
                .collect();
        }
    }
}

fn origin_of(address: &SocketAddr) -> Option<Uri> {
    Uri::builder()
        .scheme("http")
        .authority(address.to_string())
        .path_and_query("/")
        .build()
        .ok()
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
            Uri::from_static("http://127.0.0.1:50051/")
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

    /// A plain HTTP/2 server on a fresh port that answers every request
    /// with an empty OK gRPC response and counts them.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async {
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(http_body_util::Empty::<bytes::Bytes>::new())
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, count)
    }

    fn call() -> Request<Body> {
        Request::builder()
            .uri("/tasks.v1.TaskService/ListTasks")
            .body(Body::empty())
            .unwrap()
    }

    const LIMITS: CallLimits = CallLimits {
        max_body_bytes: 1024,
        request_timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn calls_are_spread_over_every_address_and_a_refusing_one_is_left_out() {
        let (first, first_calls) = counting_server().await;
        let (second, second_calls) = counting_server().await;
        let refusing = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let upstream = Upstream::new(
            "task-service",
            &Uri::from_static("http://127.0.0.1:1"),
            client(),
        )
        .unwrap();
        // What a resolution of a headless Service's name would bring.
        upstream
            .endpoints
            .resolved("tasks", Ok(vec![first, second, refusing]));

        let mut failures = 0;
        for _ in 0..30 {
            let response = upstream.forward(call(), None, LIMITS).await;
            if response.headers()["grpc-status"] != "0" {
                failures += 1;
            }
        }
        assert_eq!(
            failures, 1,
            "the refusing address is tried once, then left out"
        );
        assert_eq!(
            first_calls.load(Ordering::SeqCst) + second_calls.load(Ordering::SeqCst),
            29
        );
        assert!(first_calls.load(Ordering::SeqCst) >= 14, "round-robin");
        assert!(second_calls.load(Ordering::SeqCst) >= 14, "round-robin");
    }

    #[tokio::test]
    async fn the_last_address_is_never_left_out_and_a_failed_resolution_keeps_the_known_ones() {
        let endpoints = Endpoints::new(Uri::from_static("http://tasks:50052/"), None);
        let only: SocketAddr = "10.0.0.1:50052".parse().unwrap();
        endpoints.resolved("tasks", Ok(vec![only]));
        let endpoints = Arc::new(endpoints);
        let origin = endpoints.pick();
        assert_eq!(origin, Uri::from_static("http://10.0.0.1:50052/"));
        endpoints.forget(&origin);
        assert_eq!(endpoints.pick(), origin);

        endpoints.resolved("tasks", Err(std::io::Error::other("no DNS")));
        endpoints.resolved("tasks", Ok(Vec::new()));
        assert_eq!(endpoints.pick(), origin);

        let v6: SocketAddr = "[fd00::2]:50052".parse().unwrap();
        endpoints.resolved("tasks", Ok(vec![only, v6, only]));
        let mut seen = [endpoints.pick(), endpoints.pick(), endpoints.pick()].to_vec();
        seen.sort_by_key(ToString::to_string);
        seen.dedup();
        assert_eq!(
            seen,
            [
                Uri::from_static("http://10.0.0.1:50052/"),
                Uri::from_static("http://[fd00::2]:50052/"),
            ]
        );
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_to_its_addresses() {
        let upstream = Upstream::new(
            "auth-service",
            &Uri::from_static("http://localhost:50051"),
            client(),
        )
        .unwrap();
        // The first call goes to the name itself while it is resolved.
        assert_eq!(
            upstream.origin(),
            Uri::from_static("http://localhost:50051/")
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let origin = upstream.origin();
            if origin.host() != Some("localhost") {
                let host = origin
                    .host()
                    .unwrap()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                assert!(host.parse::<IpAddr>().unwrap().is_loopback(), "{origin}");
                assert_eq!(origin.port_u16(), Some(50051));
                break;
            }
            assert!(Instant::now() < deadline, "localhost was never resolved");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_given() {
        let upstream = Upstream::new(
            "auth-service",
            &Uri::from_static("http://[::1]:50051"),
            client(),
        )
        .unwrap();
        assert!(upstream.endpoints.to_resolve.is_none());
        assert_eq!(upstream.origin(), Uri::from_static("http://[::1]:50051/"));
    }
}
