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
//! behind an L4 load balancer, so the gateway balances itself (DESIGN.md),
//! the way gRPC's own health-checked round-robin does. Every
//! [`RESOLVE_INTERVAL`] an upstream's host name is resolved again and each
//! address it stands for is asked its `grpc.health.v1` status; calls then go
//! round-robin over the addresses that answered `SERVING`, each with its
//! own connection. Behind a Kubernetes headless Service (one name, an
//! address per ready pod) every replica takes calls and replicas that come
//! and go are followed; an address that refuses a connection is left out at
//! once, until the next check. While no address is known to serve (before
//! the first check, or when every check failed) calls go to the name
//! itself, which the client resolves and connects to as it always would,
//! so balancing never makes things worse than no balancing. An IP address
//! in the URL is used as given.
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
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tonic::{Status, body::Body};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;

use crate::{
    Error, headers,
    limits::{Exceeded, LimitedBody, body_too_large},
};

/// A pooled HTTP/2 client: one connection per upstream address, over TLS
/// for an `https://` upstream.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How the gateway reaches `https://` upstreams: whom it trusts, and the
/// certificate it presents when they ask (mutual TLS).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusting the PEM CAs in `ca`, presenting `identity` (certificate
    /// chain and key, PEM) if given.
    pub fn load(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, Error> {
        let invalid = |path: &std::path::Path| Error::InvalidTlsFile(path.display().to_string());
        let read = |path: &std::path::Path| std::fs::read(path).map_err(|_| invalid(path));
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&read(ca)?) {
            roots
                .add(certificate.map_err(|_| invalid(ca))?)
                .map_err(|_| invalid(ca))?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|_| invalid(ca))?
        .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid(cert))?;
                let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| invalid(key))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|_| invalid(cert))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// How often an idle upstream connection is pinged, and how long a ping
/// may go unanswered before the connection is dropped and re-opened.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an upstream's host name is resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Largest header block accepted from an upstream. The services never send
/// more than a few KiB (their statuses are cut to 1 KiB of message and
/// 8 KiB of details), so this is far above anything legitimate; it is set
/// high on purpose: a block over the limit costs only its own call (the
/// stream is reset), but one *far* over it (hyper's 16 KiB default was
/// passed 10x by a status quoting a 60 KB field) makes the HTTP/2 library
/// drop the whole connection, and with it every other caller's call.
pub const MAX_UPSTREAM_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// An HTTP/2 client for the upstream at `url` that gives up connecting
/// after `connect_timeout`: plain text for `http://`; for `https://`, TLS
/// as `tls` says, verifying the certificate against the host of `url`
/// whatever address of it a call goes to (so replicas found by resolving
/// the name are checked against the name).
pub fn http2_client(
    url: &Uri,
    connect_timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<HttpClient, Error> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let https = match (url.scheme_str(), tls) {
        (Some("https"), Some(tls)) => {
            let host = url
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name =
                ServerName::try_from(host).map_err(|_| Error::InvalidUpstream(url.to_string()))?;
            HttpsConnectorBuilder::new()
                .with_tls_config((*tls.config).clone())
                .https_only()
                .with_server_name_resolver(FixedServerNameResolver::new(name))
                .enable_http2()
                .wrap_connector(connector)
        }
        (Some("https"), None) => return Err(Error::MissingUpstreamCa(url.to_string())),
        _ => HttpsConnectorBuilder::new()
            .with_tls_config(
                ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|_| Error::InvalidUpstream(url.to_string()))?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http2()
            .wrap_connector(connector),
    };
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        .http2_max_header_list_size(MAX_UPSTREAM_HEADER_LIST_BYTES)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https))
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
    /// An upstream at `url`, which must be `http://host[:port]`, whose
    /// calls go through `client`. Its addresses are health-checked through
    /// `probe`, the gateway's own pool.
    pub fn new(
        name: &'static str,
        url: &Uri,
        client: HttpClient,
        probe: HttpClient,
    ) -> Result<Self, Error> {
        let invalid = || Error::InvalidUpstream(url.to_string());
        let scheme = match url.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(invalid()),
        };
        let authority = url.authority().ok_or_else(invalid)?;
        let origin = origin_uri(scheme, authority.as_str()).ok_or_else(invalid)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let default_port = if scheme == "https" { 443 } else { 80 };
        let to_resolve = match host.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some((
                host.to_owned(),
                authority.port_u16().unwrap_or(default_port),
            )),
        };
        Ok(Self {
            name,
            endpoints: Arc::new(Endpoints::new(name, scheme, origin, to_resolve, probe)),
            client,
        })
    }

    /// The same upstream, the same replicas, reached through `client`.
    pub fn through(&self, client: HttpClient) -> Self {
        Self {
            name: self.name,
            endpoints: self.endpoints.clone(),
            client,
        }
    }

    /// The service's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.name
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
            Err(error) => return serving::status::internal(&error).into_http(),
        };
        parts.version = Version::HTTP_2;
        headers::prepare_for_upstream(&mut parts.headers, peer);

        let exceeded = Exceeded::default();
        let body = Body::new(LimitedBody::new(
            body,
            limits.max_body_bytes,
            exceeded.clone(),
        ));
        // The call to the upstream is a span of its own, the parent of the
        // service's span (when spans are exported).
        let span = tracing::info_span!(
            "upstream",
            upstream = self.name,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        if serving::trace_context::exporting() {
            span.record("otel.name", parts.uri.path());
            span.record("otel.kind", "client");
        }
        serving::trace_context::inject(&span, &mut parts.headers);
        let call = self.client.request(Request::from_parts(parts, body));
        let outcome = tokio::time::timeout(limits.request_timeout, call)
            .instrument(span)
            .await;
        if exceeded.get() {
            return body_too_large().into_http();
        }
        match outcome {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(error)) => {
                tracing::warn!(upstream = self.name, %origin, error = %error_chain(&error), "upstream call failed");
                if error.is_connect() {
                    self.endpoints.forget(&origin);
                }
                Status::unavailable(format!(
                    "{} is temporarily unavailable; retry later",
                    self.name
                ))
                .into_http()
            }
            Err(_) => {
                tracing::warn!(upstream = self.name, timeout = ?limits.request_timeout, "upstream did not answer in time");
                Status::deadline_exceeded(format!("{} did not answer in time", self.name))
                    .into_http()
            }
        }
    }
}

/// The addresses behind an upstream, taken in turn.
struct Endpoints {
    /// The service's name, for logs.
    name: &'static str,
    /// `http` or `https`.
    scheme: &'static str,
    /// `http://host:port/` as configured: where calls go while no address
    /// is known to serve.
    configured: Uri,
    /// The host name and port to resolve; `None` for an IP address.
    to_resolve: Option<(String, u16)>,
    /// The client that asks each address for its health.
    probe: HttpClient,
    state: Mutex<Checked>,
    /// Round-robin position.
    next: AtomicUsize,
}

struct Checked {
    /// `http://address:port/` per serving address, or the configured
    /// origin alone; never empty.
    origins: Arc<[Uri]>,
    checked_at: Option<Instant>,
    checking: bool,
}

impl Endpoints {
    fn new(
        name: &'static str,
        scheme: &'static str,
        configured: Uri,
        to_resolve: Option<(String, u16)>,
        probe: HttpClient,
    ) -> Self {
        Self {
            name,
            scheme,
            state: Mutex::new(Checked {
                origins: Arc::from([configured.clone()]),
                checked_at: None,
                checking: false,
            }),
            configured,
            to_resolve,
            probe,
            next: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Checked> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The origin for the next call. When the last check is older than
    /// [`RESOLVE_INTERVAL`], a new one starts in the background; no call
    /// waits for it.
    fn pick(self: &Arc<Self>) -> Uri {
        let origins = {
            let mut state = self.state();
            let stale = state
                .checked_at
                .is_none_or(|at| at.elapsed() >= RESOLVE_INTERVAL);
            if let Some((host, port)) = &self.to_resolve
                && stale
                && !state.checking
            {
                state.checking = true;
                let check = Checking(self.clone());
                let (host, port) = (host.clone(), *port);
                tokio::spawn(async move { check.run(&host, port).await });
            }
            state.origins.clone()
        };
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        origins[turn % origins.len()].clone()
    }

    /// Takes in the addresses found serving; with none, calls go to the
    /// configured name again.
    fn serving(&self, host: &str, mut addresses: Vec<SocketAddr>) {
        addresses.sort_unstable();
        addresses.dedup();
        let mut origins: Vec<Uri> = addresses
            .iter()
            .filter_map(|address| origin_of(self.scheme, address))
            .collect();
        if origins.is_empty() {
            origins.push(self.configured.clone());
        }
        let mut state = self.state();
        if *state.origins != *origins {
            tracing::info!(upstream = self.name, host, serving = ?addresses, "upstream replicas changed");
            state.origins = origins.into();
        }
    }

    /// Leaves out an address that refused a connection, until the next
    /// check. The last address is always kept.
    fn forget(&self, origin: &Uri) {
        let mut state = self.state();
        if state.origins.len() > 1 && state.origins.contains(origin) {
            state.origins = state
                .origins
                .iter()
                .filter(|known| *known != origin)
                .cloned()
                .collect();
        }
    }
}

/// One background check of an upstream's addresses. However it ends
/// (finished, failed, or dropped with its runtime), the next one is
/// allowed after [`RESOLVE_INTERVAL`].
struct Checking(Arc<Endpoints>);

impl Checking {
    async fn run(&self, host: &str, port: u16) {
        let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(error) => {
                tracing::warn!(upstream = self.0.name, host, %error, "cannot resolve the upstream name; keeping the replicas known");
                return;
            }
        };
        let mut checks = tokio::task::JoinSet::new();
        for address in addresses {
            let Some(origin) = origin_of(self.0.scheme, &address) else {
                continue;
            };
            let client = self.0.probe.clone();
            let name = self.0.name;
            checks.spawn(async move { probe(name, &client, origin).await.then_some(address) });
        }
        let mut serving = Vec::new();
        while let Some(checked) = checks.join_next().await {
            serving.extend(checked.ok().flatten());
        }
        self.0.serving(host, serving);
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.checking = false;
        state.checked_at = Some(Instant::now());
    }
}

/// Longest wait for one upstream address's health answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the `upstream` replica at `origin` answers its health check
/// with `SERVING`, asked through `client` (the gateway's own pool); the
/// answer is also `gateway_upstream_up` of that address.
pub async fn probe(upstream: &'static str, client: &HttpClient, origin: Uri) -> bool {
    let mut health = HealthClient::with_origin(client.clone(), origin.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(PROBE_TIMEOUT);
    let serving = match tokio::time::timeout(PROBE_TIMEOUT, health.check(request)).await {
        Ok(Ok(response)) => response.into_inner().status == ServingStatus::Serving as i32,
        Ok(Err(_)) | Err(_) => false,
    };
    let address = origin
        .authority()
        .map_or_else(String::new, std::string::ToString::to_string);
    serving::metrics::metrics()
        .upstream_up
        .get_or_create(&serving::metrics::UpstreamLabels { upstream, address })
        .set(i64::from(serving));
    serving
}

/// `<scheme>://<authority>/`, where calls to one upstream address go.
fn origin_uri(scheme: &str, authority: &str) -> Option<Uri> {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

fn origin_of(scheme: &str, address: &SocketAddr) -> Option<Uri> {
    origin_uri(scheme, &address.to_string())
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
    use bytes::Bytes;
    use http_body::Frame;

    use super::*;

    fn client() -> HttpClient {
        http2_client(
            &Uri::from_static("http://tasks"),
            Duration::from_secs(1),
            None,
        )
        .expect("a plain-text client")
    }

    fn upstream(url: &'static str) -> Upstream {
        Upstream::new("tasks", &Uri::from_static(url), client(), client()).unwrap()
    }

    #[tokio::test]
    async fn upstream_urls_must_be_http_or_https_origins() {
        assert_eq!(
            upstream("http://127.0.0.1:50051").origin(),
            Uri::from_static("http://127.0.0.1:50051/")
        );
        assert_eq!(
            upstream("https://10.0.0.1:50051").origin(),
            Uri::from_static("https://10.0.0.1:50051/")
        );
        // An https upstream needs a CA to trust.
        assert!(matches!(
            http2_client(
                &Uri::from_static("https://auth:50051"),
                Duration::from_secs(1),
                None
            ),
            Err(Error::MissingUpstreamCa(_))
        ));
        for url in ["ftp://auth.example:21", "/relative"] {
            let url = Uri::from_static(url);
            assert!(Upstream::new("auth", &url, client(), client()).is_err());
        }
    }

    /// A plain HTTP/2 server on a fresh port that answers every call with
    /// one health response of `status` (1 `SERVING`, 2 `NOT_SERVING`) and
    /// counts the calls.
    async fn replica(status: u8) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                let service = hyper::service::service_fn(move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    // HealthCheckResponse { status }, framed, then an OK status.
                    let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let frames = [Frame::data(message), Frame::trailers(trailers)];
                    let body = http_body_util::StreamBody::new(tokio_stream::iter(
                        frames.map(Ok::<_, std::convert::Infallible>),
                    ));
                    async move {
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (address, count)
    }

    /// An HTTP/2 server that answers `/stream` with a body that sends a
    /// chunk every 50 ms for ever, and any other path with a header block
    /// of `header_bytes`.
    async fn streaming_and_oversized(header_bytes: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let body = if request.uri().path() == "/stream" {
                        let ticks = futures::stream::unfold((), |()| async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((
                                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(
                                    b"tick",
                                ))),
                                (),
                            ))
                        });
                        http_body_util::combinators::BoxBody::new(http_body_util::StreamBody::new(
                            ticks,
                        ))
                    } else {
                        http_body_util::combinators::BoxBody::new(http_body_util::Empty::new())
                    };
                    let mut response =
                        http::Response::builder().header("content-type", "application/grpc");
                    if request.uri().path() != "/stream" {
                        response = response.header("grpc-message", "x".repeat(header_bytes));
                    }
                    async move { response.body(body) }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_send_buf_size(4 * 1024 * 1024)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        address
    }

    #[tokio::test]
    async fn an_oversized_upstream_answer_fails_only_its_own_call() {
        use http_body_util::BodyExt;

        let address =
            streaming_and_oversized(MAX_UPSTREAM_HEADER_LIST_BYTES as usize + 16 * 1024).await;
        let upstream = upstream("http://127.0.0.1:1");
        upstream.endpoints.serving("tasks", vec![address]);
        let request = |path: &str| {
            Request::builder()
                .uri(format!("/{path}").as_str())
                .body(Body::empty())
                .unwrap()
        };
        // Another caller's long-lived stream on the shared connection.
        let mut stream = upstream
            .forward(request("stream"), None, LIMITS)
            .await
            .into_body();
        assert!(stream.frame().await.unwrap().unwrap().is_data());

        let oversized = upstream.forward(request("huge"), None, LIMITS).await;
        assert_eq!(oversized.headers().get("grpc-status").unwrap(), "14");

        // The stream goes on, on the same connection.
        for _ in 0..3 {
            let frame = tokio::time::timeout(Duration::from_secs(5), stream.frame())
                .await
                .expect("the stream goes on")
                .expect("not ended")
                .expect("no error");
            assert!(frame.is_data());
        }
        // A header block a service could legitimately send passes whole.
        let address = streaming_and_oversized(64 * 1024).await;
        let upstream = upstream_at(address);
        let large = upstream.forward(request("large"), None, LIMITS).await;
        assert_eq!(
            large.headers().get("grpc-message").unwrap().len(),
            64 * 1024
        );
    }

    fn upstream_at(address: SocketAddr) -> Upstream {
        let upstream = upstream("http://127.0.0.1:1");
        upstream.endpoints.serving("tasks", vec![address]);
        upstream
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
    async fn calls_are_spread_over_every_replica_and_a_refusing_one_is_left_out() {
        let (first, first_calls) = replica(1).await;
        let (second, second_calls) = replica(1).await;
        // Bound but not listening: every connection is refused. Kept
        // until the end so that nobody else takes the port.
        let refusing_socket = tokio::net::TcpSocket::new_v4().unwrap();
        refusing_socket
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let refusing = refusing_socket.local_addr().unwrap();
        let upstream = upstream("http://127.0.0.1:1");
        // What a check of a headless Service's name would find.
        upstream
            .endpoints
            .serving("tasks", vec![first, second, refusing]);

        let mut failures = 0;
        for _ in 0..30 {
            let response = upstream.forward(call(), None, LIMITS).await;
            if response.headers().get("grpc-status").is_some() {
                failures += 1;
            }
        }
        assert_eq!(
            failures, 1,
            "the refusing replica is tried once, then left out"
        );
        let (first, second) = (
            first_calls.load(Ordering::SeqCst),
            second_calls.load(Ordering::SeqCst),
        );
        assert_eq!(first + second, 29);
        assert!(
            first >= 14 && second >= 14,
            "round-robin: {first} and {second}"
        );
        drop(refusing_socket);
    }

    #[tokio::test]
    async fn the_last_replica_is_never_left_out_and_with_none_serving_calls_go_to_the_name() {
        let endpoints = Arc::new(Endpoints::new(
            "tasks",
            "http",
            Uri::from_static("http://tasks:50052/"),
            None,
            client(),
        ));
        let only: SocketAddr = "10.0.0.1:50052".parse().unwrap();
        endpoints.serving("tasks", vec![only]);
        let origin = endpoints.pick();
        assert_eq!(origin, Uri::from_static("http://10.0.0.1:50052/"));
        endpoints.forget(&origin);
        assert_eq!(endpoints.pick(), origin);

        let v6: SocketAddr = "[fd00::2]:50052".parse().unwrap();
        endpoints.serving("tasks", vec![only, v6, only]);
        let mut seen = vec![endpoints.pick(), endpoints.pick(), endpoints.pick()];
        seen.sort_by_key(ToString::to_string);
        seen.dedup();
        assert_eq!(
            seen,
            [
                Uri::from_static("http://10.0.0.1:50052/"),
                Uri::from_static("http://[fd00::2]:50052/"),
            ]
        );

        endpoints.serving("tasks", Vec::new());
        assert_eq!(endpoints.pick(), Uri::from_static("http://tasks:50052/"));
    }

    /// Picks until the origin is no longer the configured name, or 5 s.
    async fn first_checked_origin(upstream: &Upstream) -> Uri {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let checked = upstream.endpoints.state().checked_at.is_some();
            let origin = upstream.origin();
            if checked || Instant::now() > deadline {
                return origin;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_host_name_is_balanced_over_its_serving_addresses_only() {
        let (serving, _) = replica(1).await;
        let url = format!("http://localhost:{}", serving.port());
        let upstream = Upstream::new("tasks", &url.parse().unwrap(), client(), client()).unwrap();
        // Until the first check, calls go to the name itself.
        assert_eq!(upstream.origin(), format!("{url}/").parse::<Uri>().unwrap());
        let origin = first_checked_origin(&upstream).await;
        assert_eq!(origin, format!("http://{serving}/").parse::<Uri>().unwrap());

        // A replica that answers NOT_SERVING takes no calls; with no other,
        // calls keep going to the name.
        let (not_serving, _) = replica(2).await;
        let url = format!("http://localhost:{}", not_serving.port());
        let upstream = Upstream::new("tasks", &url.parse().unwrap(), client(), client()).unwrap();
        let origin = first_checked_origin(&upstream).await;
        assert_eq!(origin, format!("{url}/").parse::<Uri>().unwrap());
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_given() {
        let upstream = upstream("http://[::1]:50051");
        assert!(upstream.endpoints.to_resolve.is_none());
        assert_eq!(upstream.origin(), Uri::from_static("http://[::1]:50051/"));
    }
}
