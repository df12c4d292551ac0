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
//! Every [`RESOLVE_INTERVAL`] an upstream's host name is resolved again and
//! each address it stands for is asked its `grpc.health.v1` status; the
//! addresses that answered `SERVING` are fed, as `tower::discover` changes,
//! to a `tower::balance` power-of-two-choices balancer, which sends each
//! call to the less busy (fewer calls awaiting an answer) of two replicas
//! drawn at random, each replica with its own connection. Behind a
//! Kubernetes headless Service (one name, an address per ready pod) every
//! replica takes calls and replicas that come and go are followed; an
//! address that refuses a connection is left out at once, until the next
//! check. While no address is known to serve (before the first check, or
//! when every check failed) calls go to the name itself, which the client
//! resolves and connects to as it always would, so balancing never makes
//! things worse than no balancing. An IP address in the URL is used as
//! given: one replica, whose calls pass no balancer.
//!
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
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{Request, Response, Uri, Version, uri::PathAndQuery};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, body::Body};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{
    BoxError, Service, ServiceExt,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
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
    /// tower's power-of-two-choices balancer over those addresses, each
    /// reached through this upstream's client; behind a buffer, so that
    /// every call can share it.
    balanced: Balanced,
}

/// Where an upstream's calls go.
#[derive(Clone)]
pub struct Balanced(Route);

#[derive(Clone)]
enum Route {
    /// The balancer, shared: a call waits for a place in its queue, never
    /// for another call's answer.
    Replicas(Buffer<Request<Body>, <Balancer as Service<Request<Body>>>::Future>),
    /// An IP address in the URL: one replica for good, so there is no
    /// choice to make, and calls go to it with no balancer between. (The
    /// balancer's worker task and queue cost a call through the gateway
    /// ~8,400 instructions under callgrind, 4.5%.)
    One(Box<Replica>),
}

/// The balancer behind the buffer, and the changes of replicas it takes.
type Balancer = Balance<UnboundedReceiverStream<Result<ReplicaChange, Infallible>>, Request<Body>>;

/// A call's answer, as a replica and the buffer give it.
type CallFuture = BoxFuture<'static, Result<Response<Incoming>, BoxError>>;

impl Service<Request<Body>> for Balanced {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call waits for its place in the buffer's queue itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> CallFuture {
        self.dispatch(request)
    }
}

impl Balanced {
    /// Hands `request` to the balancer (or the one replica), with no
    /// `&mut` needed.
    fn dispatch(&self, request: Request<Body>) -> CallFuture {
        match &self.0 {
            // Boxed, so that the futures awaiting it see a plain `dyn
            // Future`: awaited directly, the buffer's generic bounds defeat
            // the compiler's proof that an `async fn` holding it is `Send`.
            Route::Replicas(buffer) => Box::pin(buffer.clone().oneshot(request)),
            Route::One(replica) => replica.send(request),
        }
    }
}

/// How many calls may wait for the balancer's worker at once. It hands each
/// call to a replica as soon as it arrives (the replicas are always ready:
/// hyper's client queues on its own), so this only has to outgrow a burst.
const BALANCER_QUEUE: usize = 1024;

/// The bounds [`Upstream::forward`] applies to one call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Upstream {
    /// An upstream at `url`, which must be `http://host[:port]`, whose
    /// calls go through `client`. Its addresses are health-checked through
    /// `probe`, the gateway's own pool, every [`RESOLVE_INTERVAL`] for as
    /// long as the upstream is in use. Must be called within a Tokio
    /// runtime.
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
        let endpoints = Arc::new(Endpoints::new(name, scheme, origin, to_resolve, probe));
        if endpoints.to_resolve.is_some() {
            tokio::spawn(Endpoints::check_while_used(Arc::downgrade(&endpoints)));
        }
        Ok(Self {
            name,
            balanced: endpoints.balancer(client),
            endpoints,
        })
    }

    /// The same upstream, the same replicas, reached through `client` (a
    /// balancer of its own).
    pub fn through(&self, client: HttpClient) -> Self {
        Self {
            name: self.name,
            endpoints: self.endpoints.clone(),
            balanced: self.endpoints.balancer(client),
        }
    }

    /// The service's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The balanced service, for the gateway's own calls with a tonic
    /// client (requests carry only a path; the replica adds its origin).
    pub fn service(&self) -> Balanced {
        self.balanced.clone()
    }

    /// `http://address:port/` of every replica calls may go to now.
    pub fn origins(&self) -> Arc<[Uri]> {
        self.endpoints.state().origins.clone()
    }

    /// The client the health checks of single replicas go through.
    pub fn probe_client(&self) -> &HttpClient {
        &self.endpoints.probe
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
        // Only the path travels: a query string is never forwarded. The
        // replica that takes the call puts its own origin in front.
        parts.uri = match PathAndQuery::try_from(parts.uri.path()) {
            Ok(path) => Uri::from(path),
            Err(_) => Uri::from_static("/"),
        };
        parts.version = Version::HTTP_2;
        headers::prepare_for_upstream(&mut parts.headers, peer);

        let exceeded = Exceeded::default();
        let body = Body::new(LimitedBody::new(
            body,
            limits.max_body_bytes,
            exceeded.clone(),
        ));
        // When spans are exported, the call to the upstream is a span of its
        // own, the parent of the service's span. Otherwise it would only
        // repeat, in the lines logged while the call is out, the upstream's
        // name, which the lines below name themselves; making it cost ~4,000
        // instructions a call under callgrind, 2% of a call through here.
        let span = if serving::trace_context::exporting() {
            let span = tracing::info_span!(
                "upstream",
                upstream = self.name,
                otel.name = parts.uri.path(),
                otel.kind = "client",
            );
            serving::trace_context::inject(&span, &mut parts.headers);
            span
        } else {
            tracing::Span::none()
        };
        let call = self.balanced.dispatch(Request::from_parts(parts, body));
        let outcome = tokio::time::timeout(limits.request_timeout, call)
            .instrument(span)
            .await;
        if exceeded.get() {
            return body_too_large().into_http();
        }
        match outcome {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(error)) => {
                match error.downcast_ref::<ReplicaError>() {
                    Some(failed) => {
                        tracing::warn!(upstream = self.name, origin = %failed.origin, error = %error_chain(&failed.error), "upstream call failed");
                        if failed.error.is_connect() {
                            self.endpoints.forget(&failed.origin);
                        }
                    }
                    None => {
                        tracing::warn!(upstream = self.name, error = %error_chain(&*error), "upstream call failed");
                    }
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

/// One replica as the balancer sees it: the upstream's pooled client,
/// aimed at the replica's origin.
#[derive(Clone)]
struct Replica {
    origin: Uri,
    client: HttpClient,
}

/// A call that failed at one replica.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {error}")]
struct ReplicaError {
    origin: Uri,
    #[source]
    error: hyper_util::client::legacy::Error,
}

impl Service<Request<Body>> for Replica {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // hyper's client takes every call and queues it on the connection.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.send(request)
    }
}

impl Replica {
    /// Sends `request` (whose URI is a path) to this replica's origin.
    fn send(&self, mut request: Request<Body>) -> CallFuture {
        let mut uri = self.origin.clone().into_parts();
        uri.path_and_query = request.uri().path_and_query().cloned();
        match Uri::from_parts(uri) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(error) => return Box::pin(std::future::ready(Err(error.into()))),
        }
        let origin = self.origin.clone();
        let call = self.client.request(request);
        Box::pin(async move {
            call.await
                .map_err(|error| BoxError::from(ReplicaError { origin, error }))
        })
    }
}

/// A change of a balancer's replicas.
type ReplicaChange = Change<ReplicaKey, PendingRequests<Replica>>;

/// How a balancer tells its replicas apart: a number per origin, since the
/// balancer hashes the key of the replica a call goes to on every call
/// (hashing the origin's URI instead cost about 3,000 instructions a call,
/// 1.3% of a call through the gateway, under callgrind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReplicaKey(u64);

/// The addresses behind an upstream, and the balancers that spread calls
/// over them.
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
}

struct Checked {
    /// `http://address:port/` per serving address, or the configured
    /// origin alone; never empty. Every balancer holds exactly these.
    origins: Arc<[Uri]>,
    /// Each balancer's client, and where its changes go.
    balancers: Vec<(
        HttpClient,
        mpsc::UnboundedSender<Result<ReplicaChange, Infallible>>,
    )>,
    /// The key of each of `origins` in the balancers.
    keys: HashMap<Uri, ReplicaKey>,
    /// The key the next new origin gets.
    next_key: u64,
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
                balancers: Vec::new(),
                keys: HashMap::from([(configured.clone(), ReplicaKey(0))]),
                next_key: 1,
            }),
            configured,
            to_resolve,
            probe,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Checked> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new balancer over the current origins, kept up to date with them,
    /// whose replicas call through `client`; for an IP address, its one
    /// replica.
    fn balancer(&self, client: HttpClient) -> Balanced {
        if self.to_resolve.is_none() {
            return Balanced(Route::One(Box::new(Replica {
                origin: self.configured.clone(),
                client,
            })));
        }
        self.replicas(client)
    }

    /// A new balancer over the current origins, kept up to date with them.
    fn replicas(&self, client: HttpClient) -> Balanced {
        let (changes, discover) = mpsc::unbounded_channel();
        let mut state = self.state();
        for (origin, key) in &state.keys {
            let _ = changes.send(Ok(insert(*key, origin, &client)));
        }
        state.balancers.push((client, changes));
        let balance = Balance::new(UnboundedReceiverStream::new(discover));
        Balanced(Route::Replicas(Buffer::new(balance, BALANCER_QUEUE)))
    }

    /// Makes `origins` (never empty) the replicas of every balancer.
    fn replace(&self, state: &mut Checked, origins: Arc<[Uri]>) {
        let mut added = Vec::new();
        for origin in origins.iter() {
            if !state.keys.contains_key(origin) {
                let key = ReplicaKey(state.next_key);
                state.next_key += 1;
                state.keys.insert(origin.clone(), key);
                added.push((key, origin));
            }
        }
        let removed: Vec<ReplicaKey> = state
            .origins
            .iter()
            .filter(|origin| !origins.contains(origin))
            .filter_map(|origin| state.keys.remove(origin))
            .collect();
        // Inserts first: a balancer never has an empty moment.
        state.balancers.retain(|(client, changes)| {
            added
                .iter()
                .map(|(key, origin)| insert(*key, origin, client))
                .chain(removed.iter().map(|key| Change::Remove(*key)))
                .all(|change| changes.send(Ok(change)).is_ok())
        });
        state.origins = origins;
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
            self.replace(&mut state, origins.into());
        }
    }

    /// Leaves out an address that refused a connection, until the next
    /// check. The last address is always kept.
    fn forget(&self, origin: &Uri) {
        let mut state = self.state();
        if state.origins.len() > 1 && state.origins.contains(origin) {
            let origins = state
                .origins
                .iter()
                .filter(|known| *known != origin)
                .cloned()
                .collect();
            self.replace(&mut state, origins);
        }
    }

    /// Resolves the name and checks its addresses every
    /// [`RESOLVE_INTERVAL`], until the upstream is dropped.
    async fn check_while_used(endpoints: Weak<Self>) {
        while let Some(this) = endpoints.upgrade() {
            if let Some((host, port)) = &this.to_resolve {
                this.check(host, *port).await;
            }
            drop(this);
            tokio::time::sleep(RESOLVE_INTERVAL).await;
        }
    }

    /// One check of the name's addresses: the ones answering `SERVING`
    /// become the replicas.
    async fn check(&self, host: &str, port: u16) {
        let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(error) => {
                tracing::warn!(upstream = self.name, host, %error, "cannot resolve the upstream name; keeping the replicas known");
                return;
            }
        };
        let mut checks = tokio::task::JoinSet::new();
        for address in addresses {
            let Some(origin) = origin_of(self.scheme, &address) else {
                continue;
            };
            let client = self.probe.clone();
            let name = self.name;
            checks.spawn(async move { probe(name, &client, origin).await.then_some(address) });
        }
        let mut serving = Vec::new();
        while let Some(checked) = checks.join_next().await {
            serving.extend(checked.ok().flatten());
        }
        self.serving(host, serving);
    }
}

/// The balancer's change that adds the replica at `origin`, called through
/// `client`, weighed by its calls waiting for an answer.
fn insert(key: ReplicaKey, origin: &Uri, client: &HttpClient) -> ReplicaChange {
    let replica = Replica {
        origin: origin.clone(),
        client: client.clone(),
    };
    Change::Insert(
        key,
        PendingRequests::new(replica, CompleteOnResponse::default()),
    )
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
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Instant,
    };

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

    /// An upstream at an IP address whose calls go through the balancer,
    /// as a host name's do, so that a test can give it the replicas a
    /// check of a name would find.
    fn balanced(url: &'static str) -> Upstream {
        let upstream = upstream(url);
        Upstream {
            balanced: upstream.endpoints.replicas(client()),
            ..upstream
        }
    }

    #[tokio::test]
    async fn upstream_urls_must_be_http_or_https_origins() {
        assert_eq!(
            *upstream("http://127.0.0.1:50051").origins(),
            [Uri::from_static("http://127.0.0.1:50051/")]
        );
        assert_eq!(
            *upstream("https://10.0.0.1:50051").origins(),
            [Uri::from_static("https://10.0.0.1:50051/")]
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
        let upstream = balanced("http://127.0.0.1:1");
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
        let upstream = balanced("http://127.0.0.1:1");
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
        let upstream = balanced("http://127.0.0.1:1");
        // What a check of a headless Service's name would find.
        upstream
            .endpoints
            .serving("tasks", vec![first, second, refusing]);
        let refusing = origin_of("http", &refusing).unwrap();

        // The balancer draws replicas at random, so the refusing one is
        // met within a few calls (not within 200: a chance of 10^-35).
        let mut calls = 0;
        while upstream.origins().contains(&refusing) {
            assert!(calls < 200, "the refusing replica is never left out");
            let response = upstream.forward(call(), None, LIMITS).await;
            calls += 1;
            if response.headers().get("grpc-status").is_some() {
                assert!(
                    !upstream.origins().contains(&refusing),
                    "a refused call leaves its replica out at once"
                );
            }
        }
        let answered = || first_calls.load(Ordering::SeqCst) + second_calls.load(Ordering::SeqCst);
        assert_eq!(answered(), calls - 1, "one call failed: the refused one");

        // From then on every call is answered, by both replicas (each is
        // drawn with an equal chance: that one is never drawn in 40 calls
        // has a chance of 10^-12).
        let (first_before, second_before) = (
            first_calls.load(Ordering::SeqCst),
            second_calls.load(Ordering::SeqCst),
        );
        for _ in 0..40 {
            let response = upstream.forward(call(), None, LIMITS).await;
            assert!(response.headers().get("grpc-status").is_none());
        }
        let (first, second) = (
            first_calls.load(Ordering::SeqCst) - first_before,
            second_calls.load(Ordering::SeqCst) - second_before,
        );
        assert_eq!(first + second, 40);
        assert!(first > 0 && second > 0, "spread: {first} and {second}");
        drop(refusing_socket);
    }

    #[tokio::test]
    async fn calls_go_to_the_replica_with_fewer_calls_waiting() {
        // One replica answers at once, the other holds every call until
        // the end of the test: with one call held there, the balancer
        // weighs it busier and sends the rest to the other.
        let (quick, quick_calls) = replica(1).await;
        let (held, held_calls, release) = holding_replica().await;
        let upstream = balanced("http://127.0.0.1:1");
        upstream.endpoints.serving("tasks", vec![quick, held]);

        let mut waiting = Vec::new();
        while held_calls.load(Ordering::SeqCst) == 0 {
            assert!(waiting.len() < 200, "the holding replica is never drawn");
            let upstream = upstream.clone();
            waiting.push(tokio::spawn(async move {
                upstream.forward(call(), None, LIMITS).await
            }));
            // Each call reaches its replica before the next is sent.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let quick_before = quick_calls.load(Ordering::SeqCst);
        for _ in 0..40 {
            let response = upstream.forward(call(), None, LIMITS).await;
            assert!(response.headers().get("grpc-status").is_none());
        }
        assert_eq!(quick_calls.load(Ordering::SeqCst) - quick_before, 40);
        assert_eq!(held_calls.load(Ordering::SeqCst), 1);
        release.cancel();
        for call in waiting {
            call.await.unwrap();
        }
    }

    /// A replica that counts its calls and answers none of them until
    /// `release` is cancelled.
    async fn holding_replica() -> (SocketAddr, Arc<AtomicUsize>, serving::CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let release = serving::CancellationToken::new();
        let (counted, released) = (count.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counted, released) = (counted.clone(), released.clone());
                let service = hyper::service::service_fn(move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let released = released.clone();
                    async move {
                        released.cancelled().await;
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "0")
                            .body(http_body_util::Empty::<Bytes>::new())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (address, count, release)
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
        let origins = || endpoints.state().origins.to_vec();
        let only: SocketAddr = "10.0.0.1:50052".parse().unwrap();
        endpoints.serving("tasks", vec![only]);
        let origin = Uri::from_static("http://10.0.0.1:50052/");
        assert_eq!(origins(), std::slice::from_ref(&origin));
        endpoints.forget(&origin);
        assert_eq!(origins(), std::slice::from_ref(&origin));

        let v6: SocketAddr = "[fd00::2]:50052".parse().unwrap();
        endpoints.serving("tasks", vec![only, v6, only]);
        assert_eq!(
            origins(),
            [origin, Uri::from_static("http://[fd00::2]:50052/")]
        );

        endpoints.serving("tasks", Vec::new());
        assert_eq!(origins(), [Uri::from_static("http://tasks:50052/")]);
    }

    /// The replicas once the background check has changed them from the
    /// configured name, or after 5 s.
    async fn first_checked_origins(upstream: &Upstream) -> Vec<Uri> {
        let configured = upstream.origins();
        let deadline = Instant::now() + Duration::from_secs(5);
        while upstream.origins() == configured && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        upstream.origins().to_vec()
    }

    #[tokio::test]
    async fn a_host_name_is_balanced_over_its_serving_addresses_only() {
        let (serving, _) = replica(1).await;
        let url = format!("http://localhost:{}", serving.port());
        let upstream = Upstream::new("tasks", &url.parse().unwrap(), client(), client()).unwrap();
        // Until the first check, calls go to the name itself.
        assert_eq!(
            *upstream.origins(),
            [format!("{url}/").parse::<Uri>().unwrap()]
        );
        let origins = first_checked_origins(&upstream).await;
        assert_eq!(
            origins,
            [format!("http://{serving}/").parse::<Uri>().unwrap()]
        );
        // And the balancer follows: a call through it reaches the replica.
        let response = upstream.forward(call(), None, LIMITS).await;
        assert!(response.headers().get("grpc-status").is_none());

        // A replica that answers NOT_SERVING takes no calls; with no other,
        // calls keep going to the name.
        let (not_serving, _) = replica(2).await;
        let url = format!("http://localhost:{}", not_serving.port());
        let upstream = Upstream::new("tasks", &url.parse().unwrap(), client(), client()).unwrap();
        upstream
            .endpoints
            .check("localhost", not_serving.port())
            .await;
        assert_eq!(
            *upstream.origins(),
            [format!("{url}/").parse::<Uri>().unwrap()]
        );
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_given() {
        let upstream = upstream("http://[::1]:50051");
        assert!(upstream.endpoints.to_resolve.is_none());
        assert!(
            matches!(upstream.balanced.0, Route::One(_)),
            "one address: no balancer"
        );
        assert_eq!(
            *upstream.origins(),
            [Uri::from_static("http://[::1]:50051/")]
        );
    }
}
