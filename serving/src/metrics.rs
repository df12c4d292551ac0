//! Prometheus metrics: one registry per process, served at `GET /metrics`
//! on `--metrics-listen` (off by default), in the OpenMetrics text format.
//!
//! The RPC metrics use go-grpc-prometheus's names, so existing dashboards
//! work: `grpc_server_started_total`, `grpc_server_handled_total`
//! (`grpc_code`), `grpc_server_handling_seconds` (a histogram), with
//! `grpc_type`, `grpc_service` and `grpc_method` labels, plus
//! `grpc_server_in_flight`. Every family carries `component` (which of the
//! three services, or the gateway), so the all-in-one process reports each
//! apart. The rest names what operators ask about: database pool use,
//! the password-hash queue, JWKS refreshes and key generation, open
//! `WatchTasks` streams, upstream health, session events, mail, and
//! every refusal by a limit, by reason.
//!
//! **Label values come from fixed sets only.** A method is labelled by its
//! name only when it is one of the methods the descriptor sets know
//! (else `unknown`); reasons, outcomes and states are `&'static str`s of
//! the code. Nothing a client sends can mint a new series.

use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;

/// The labels of one RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub component: &'static str,
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// The labels of one finished RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub component: &'static str,
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub component: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub component: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub component: &'static str,
    pub outcome: &'static str,
}

/// An upstream address as the gateway found it by resolving its own
/// configuration (never client input).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: &'static str,
    pub address: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub started: Family<RpcLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub handling_seconds: Family<RpcLabels, Histogram>,
    pub in_flight: Family<ComponentLabels, Gauge>,
    /// Database connections, `in_use` and `idle`.
    pub db_connections: Family<StateLabels, Gauge>,
    /// Callers waiting for a password-hash thread, and how long they waited.
    pub hash_waiting: Gauge,
    pub hash_wait_seconds: Histogram,
    /// JWKS fetches by the task-service, by outcome.
    pub jwks_refreshes: Family<OutcomeLabels, Counter>,
    /// Signing keys the auth-service generated.
    pub signing_keys_generated: Counter,
    pub watch_streams_open: Gauge,
    /// Whether the gateway's last check found an upstream address serving.
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    /// Calls, streams and connections refused by a limit, by reason.
    pub limit_refusals: Family<ReasonLabels, Counter>,
    /// Whether the task-service follows the auth-service's session events.
    pub session_events_following: Gauge,
    pub session_events_applied: Family<OutcomeLabels, Counter>,
    /// Mails by outcome: `sent`, `retried`, `failed`.
    pub mail: Family<OutcomeLabels, Counter>,
    /// Run before each scrape, to sample what is cheaper to read than to
    /// track (pool sizes).
    samplers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// The buckets of go-grpc-prometheus's handling-time histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let handling_seconds =
            Family::<RpcLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            handling_seconds,
            in_flight: Family::default(),
            db_connections: Family::default(),
            hash_waiting: Gauge::default(),
            hash_wait_seconds: latency_histogram(),
            jwks_refreshes: Family::default(),
            signing_keys_generated: Counter::default(),
            watch_streams_open: Gauge::default(),
            upstream_up: Family::default(),
            limit_refusals: Family::default(),
            session_events_following: Gauge::default(),
            session_events_applied: Family::default(),
            mail: Family::default(),
            registry: Mutex::new(Registry::default()),
            samplers: Mutex::default(),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its status",
            metrics.handling_seconds.clone(),
        );
        registry.register(
            "grpc_server_in_flight",
            "RPCs in flight (open streams included)",
            metrics.in_flight.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            metrics.db_connections.clone(),
        );
        registry.register(
            "password_hash_waiting",
            "Callers waiting for a password-hash thread",
            metrics.hash_waiting.clone(),
        );
        registry.register(
            "password_hash_wait_seconds",
            "Time callers waited for a password-hash thread",
            metrics.hash_wait_seconds.clone(),
        );
        registry.register(
            "jwks_refreshes",
            "Fetches of the token-signing keys, by outcome",
            metrics.jwks_refreshes.clone(),
        );
        registry.register(
            "signing_keys_generated",
            "Token-signing keys generated",
            metrics.signing_keys_generated.clone(),
        );
        registry.register(
            "watch_streams_open",
            "Open WatchTasks streams",
            metrics.watch_streams_open.clone(),
        );
        registry.register(
            "gateway_upstream_up",
            "Whether the last check found an upstream address serving (1) or not (0)",
            metrics.upstream_up.clone(),
        );
        registry.register(
            "limit_refusals",
            "Calls, streams and sign-ins refused by a limit, by reason",
            metrics.limit_refusals.clone(),
        );
        registry.register(
            "session_events_following",
            "Whether the session-event stream of the auth-service is followed (1) or not (0)",
            metrics.session_events_following.clone(),
        );
        registry.register(
            "session_events_applied",
            "Session events acted on, by kind",
            metrics.session_events_applied.clone(),
        );
        registry.register("mail", "Mail deliveries, by outcome", metrics.mail.clone());
        *metrics
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = registry;
        metrics
    }

    /// Makes `component`'s refusal counters exist at zero, so a dashboard
    /// (and `rate()`) sees every reason before the first refusal.
    pub fn declare_refusals(&self, component: &'static str, reasons: &[&'static str]) {
        for &reason in reasons {
            drop(
                self.limit_refusals
                    .get_or_create(&ReasonLabels { component, reason }),
            );
        }
    }

    /// Makes `component`'s mail counters exist at zero, by `outcomes`.
    pub fn declare_mail(&self, component: &'static str, outcomes: &[&'static str]) {
        for &outcome in outcomes {
            drop(
                self.mail
                    .get_or_create(&OutcomeLabels { component, outcome }),
            );
        }
    }

    /// Counts a refusal by a limit.
    pub fn refused(&self, component: &'static str, reason: &'static str) {
        self.limit_refusals
            .get_or_create(&ReasonLabels { component, reason })
            .inc();
    }

    /// Runs `sample` before every scrape.
    pub fn sample_on_scrape(&self, sample: impl Fn() + Send + Sync + 'static) {
        self.samplers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(sample));
    }

    /// The OpenMetrics text of every metric now.
    pub fn encode(&self) -> String {
        for sample in self
            .samplers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            sample();
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if encode(&mut text, &registry).is_err() {
            tracing::error!("cannot encode the metrics");
        }
        text
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    tracing::info!(address = ?listener.local_addr().ok(), "metrics listening");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let service =
            hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                let response = if request.uri().path() == "/metrics" {
                    Response::builder()
                        .header(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(http_body_util::Full::new(Bytes::from(metrics().encode())))
                } else {
                    Response::builder()
                        .status(http::StatusCode::NOT_FOUND)
                        .body(http_body_util::Full::new(Bytes::from_static(
                            b"not found\n",
                        )))
                };
                Ok::<_, Infallible>(response.unwrap_or_default())
            });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
        );
    }
}

/// Binds `address` and serves the metrics there, if an address is given.
pub async fn serve_if(
    address: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Some(address) = address {
        let listener = crate::transport::bind(address).await?;
        tokio::spawn(serve(listener, shutdown));
    }
    Ok(())
}

/// A method's fixed labels: service, method, and kind of call.
#[derive(Debug, Clone, Copy)]
struct Method {
    service: &'static str,
    method: &'static str,
    kind: &'static str,
}

const UNKNOWN: Method = Method {
    service: "unknown",
    method: "unknown",
    kind: "unary",
};

/// Every method the descriptor sets know, by path, with `'static` names.
fn methods() -> &'static HashMap<String, Method> {
    static METHODS: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
        let mut methods = HashMap::new();
        for set in [
            todo_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let full: &'static str = Box::leak(
                        format!("{package}.{}", service.name.unwrap_or_default()).into_boxed_str(),
                    );
                    for method in service.method {
                        let name: &'static str =
                            Box::leak(method.name.unwrap_or_default().into_boxed_str());
                        let kind = match (
                            method.client_streaming.unwrap_or(false),
                            method.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        methods.insert(
                            format!("/{full}/{name}"),
                            Method {
                                service: full,
                                method: name,
                                kind,
                            },
                        );
                    }
                }
            }
        }
        methods
    });
    &METHODS
}

/// The series one component's calls of one method count into. Each is
/// made in its family on the method's first call (with that status, for
/// `handled`), so the scrape shows only what was called, and kept: a call
/// then counts with no lookup of its labels in the families (which hashed
/// four or five label strings each time, ~3,000 instructions a call under
/// callgrind).
#[derive(Debug)]
struct Series {
    labels: RpcLabels,
    started: OnceLock<Counter>,
    handling_seconds: OnceLock<Histogram>,
    /// By status code (0 to 16).
    handled: [OnceLock<Counter>; 17],
}

impl Series {
    fn new(component: &'static str, method: Method) -> Self {
        Self {
            labels: RpcLabels {
                component,
                grpc_type: method.kind,
                grpc_service: method.service,
                grpc_method: method.method,
            },
            started: OnceLock::new(),
            handling_seconds: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn started(&self) -> &Counter {
        self.started
            .get_or_init(|| metrics().started.get_or_create(&self.labels).clone())
    }

    fn handling_seconds(&self) -> &Histogram {
        self.handling_seconds.get_or_init(|| {
            metrics()
                .handling_seconds
                .get_or_create(&self.labels)
                .clone()
        })
    }

    fn handled(&self, code: tonic::Code) -> &Counter {
        let index = usize::try_from(code as i32).unwrap_or(0);
        self.handled[index.min(16)].get_or_init(|| {
            let labels = &self.labels;
            metrics()
                .handled
                .get_or_create(&HandledLabels {
                    component: labels.component,
                    grpc_type: labels.grpc_type,
                    grpc_service: labels.grpc_service,
                    grpc_method: labels.grpc_method,
                    grpc_code: code_label(code),
                })
                .clone()
        })
    }
}

/// Every method's [`Series`] for one component, by path.
#[derive(Debug)]
struct Component {
    methods: HashMap<&'static str, Series>,
    unknown: Series,
    in_flight: Gauge,
}

impl Component {
    /// `component`'s series, made on first use and kept for the process's
    /// life (one per component, three at most).
    fn of(component: &'static str) -> &'static Self {
        static COMPONENTS: LazyLock<Mutex<HashMap<&'static str, &'static Component>>> =
            LazyLock::new(Mutex::default);
        let mut components = COMPONENTS.lock().unwrap_or_else(PoisonError::into_inner);
        components.entry(component).or_insert_with(|| {
            Box::leak(Box::new(Self {
                methods: methods()
                    .iter()
                    .map(|(path, &method)| (path.as_str(), Series::new(component, method)))
                    .collect(),
                unknown: Series::new(component, UNKNOWN),
                in_flight: metrics()
                    .in_flight
                    .get_or_create(&ComponentLabels { component })
                    .clone(),
            }))
        })
    }

    fn series(&self, path: &str) -> &Series {
        self.methods.get(path).unwrap_or(&self.unknown)
    }
}

/// A tower layer recording the RPC metrics of `component`.
#[derive(Debug, Clone, Copy)]
pub struct RpcMetricsLayer {
    component: &'static Component,
}

impl RpcMetricsLayer {
    pub fn new(component: &'static str) -> Self {
        Self {
            component: Component::of(component),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            component: self.component,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    component: &'static Component,
}

impl<S, B> tower::Service<Request<B>> for RpcMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = Call::start(self.component, request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(call.watch(response))
        })
    }
}

/// One RPC being measured; records its end exactly once.
struct Call {
    component: &'static Component,
    series: &'static Series,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(component: &'static Component, path: &str) -> Self {
        let series = component.series(path);
        series.started().inc();
        component.in_flight.inc();
        Self {
            component,
            series,
            started: Instant::now(),
            done: false,
        }
    }

    /// Records the end with the status found in `headers`, if one is there.
    fn end_with(&mut self, headers: &http::HeaderMap) -> bool {
        let Some(code) = headers.get("grpc-status") else {
            return false;
        };
        let code = code
            .to_str()
            .ok()
            .and_then(|code| code.parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
        self.end(code);
        true
    }

    fn end(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.series.handled(code).inc();
        self.series
            .handling_seconds()
            .observe(self.started.elapsed().as_secs_f64());
        self.component.in_flight.dec();
    }

    /// The response, its end recorded now (a status in the headers) or
    /// when its body reaches the trailers, ends, or is dropped.
    fn watch(mut self, response: Response<Body>) -> Response<Body> {
        if self.end_with(response.headers()) {
            return response;
        }
        response.map(|body| {
            Body::new(Watched {
                inner: body,
                call: self,
            })
        })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The client went away before a status: what go-grpc-prometheus
        // calls Canceled.
        self.end(tonic::Code::Cancelled);
    }
}

/// The names go-grpc-prometheus gives the codes.
fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

/// A response body that records its call's end at its trailers.
struct Watched {
    inner: Body,
    call: Call,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.end_with(trailers);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.end(status.code()),
            Poll::Ready(None) => this.call.end(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps the pool gauges of `database` current at each scrape.
pub fn sample_pools(component: &'static str, database: &crate::database::Database) {
    let database = Arc::new(database.clone());
    metrics().sample_on_scrape(move || {
        let (size, idle) = database.pool_sizes();
        let metrics = metrics();
        metrics
            .db_connections
            .get_or_create(&StateLabels {
                component,
                state: "in_use",
            })
            .set(i64::from(size.saturating_sub(idle)));
        metrics
            .db_connections
            .get_or_create(&StateLabels {
                component,
                state: "idle",
            })
            .set(i64::from(idle));
    });
}
