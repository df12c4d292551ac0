//! Every layer a request passes, top to bottom, in one place.
//!
//! ```text
//! connection (server.rs)      peer address into the request's extensions
//!  -> CORS (cors.rs)          preflights answered here; allowed origins marked
//!  -> entry                   x-request-id set and echoed, gRPC-Web callers
//!     |                       marked; GETs answered here: the JWKS
//!     |                       (jwks.rs), /healthz and /readyz, the web app
//!     |                       (web.rs); a POST in a content type nobody
//!     |                       speaks answered 415
//!     |-> Connect (connect.rs) unary and streaming, proto and JSON, made a
//!     |                       gRPC call to the stack below and back
//!     -> gRPC-Web (tonic-web) grpc-web / grpc-web-text <-> gRPC; gRPC passes
//!        -> trace (tower-http) the call's span; status (from the trailers
//!           |                  too) and latency logged when it ends
//!        -> router (router.rs) per-address and global concurrency
//!           |                  permits; for gRPC-Web callers a status in
//!           |                  the headers moves to the trailers frame;
//!           |                  responses end with UNAVAILABLE if still
//!           |                  open when the shutdown grace runs out
//!           |                  (drain.rs);
//!           |                  then by service name:
//!           -> upstream        auth-service or task-service (upstream.rs)
//!           -> local           health (health.rs), reflection
//!           -> UNIMPLEMENTED
//! ```
//!
//! The JWKS document, probes and app are answered *before* the gRPC-Web
//! layer because that layer turns away every HTTP/1.1 request that is not
//! gRPC-Web; Connect calls enter the stack below it as plain gRPC. Tracing
//! sits *below* it, where every call is plain gRPC and its status is a real
//! trailer the classifier can read. Statuses that describe the caller's
//! request (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) are outcomes, logged at
//! `DEBUG` with the rest (a line per call at `INFO` cost the gateway a
//! seventh of its CPU; the metrics count every call); only the ones that
//! say something went wrong on this side (`UNAVAILABLE`,
//! `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, ...) are logged
//! as failures, at `WARN`: the upstream that produced them logs the cause.
//! Everything below CORS answers with a response, never an error, so a
//! failing call can never take its connection down with it.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serving::{CancellationToken, health::HealthReporter};
use tonic::{body::Body, service::Routes};
use tonic_web::GrpcWebLayer;
use tower::{Layer, Service, ServiceExt, util::BoxCloneService};
use tower_http::{
    classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier},
    cors::Cors,
    trace::{DefaultOnEos, DefaultOnFailure, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    Config, Error,
    connect::{self, Connect, Protocol},
    cors, headers,
    health::Readiness,
    jwks::{self, Jwks},
    limits::Budget,
    router::{GrpcWebCaller, Router},
    upstream::{self, CallLimits, Upstream, UpstreamTls},
    web::{self, WebApp},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// What Connect clients may call with JSON as well as protobuf: both public
/// APIs and health (`curl -d '{}' .../grpc.health.v1.Health/Check`).
const CONNECT_SERVICES: [&str; 3] = [
    serving::reflection::PUBLIC_SERVICES[0],
    serving::reflection::PUBLIC_SERVICES[1],
    "grpc.health.v1.Health",
];

/// The whole gateway as one tower service.
pub type GatewayService = Cors<Entry>;

/// The gateway's service, and what the server must run beside it.
pub struct Gateway {
    pub service: GatewayService,
    /// Feeds the gateway's health from the upstreams' (see health.rs).
    pub health_reporter: HealthReporter,
    /// The upstreams for the gateway's own calls (health probes), on a
    /// connection pool apart from the one clients' calls share.
    pub auth: Upstream,
    pub tasks: Upstream,
    /// Cancelled by the server when the shutdown grace runs out: every
    /// response still open then ends with `UNAVAILABLE` (see drain.rs).
    pub closing: CancellationToken,
    /// What `GET /readyz` says.
    pub readiness: Readiness,
}

impl Gateway {
    pub fn build(config: &Config) -> Result<Self, Error> {
        // Clients' calls share one pool: one connection per upstream
        // address. The gateway's own calls (health probes, the JWKS fetch)
        // get a pool of their own, so a call connection whose streams are all taken by
        // long `WatchTasks` streams cannot make them queue and time out:
        // health reports the upstream, not how busy the gateway is.
        let tls = match &config.upstream_ca {
            Some(ca) => Some(UpstreamTls::load(
                ca,
                config
                    .upstream_client_cert
                    .as_deref()
                    .zip(config.upstream_client_key.as_deref()),
            )?),
            None => None,
        };
        let clients = |url| {
            let client = || upstream::http2_client(url, config.connect_timeout, tls.as_ref());
            Ok::<_, Error>((client()?, client()?))
        };
        let (auth_calls, auth_own) = clients(&config.auth_url)?;
        let (tasks_calls, tasks_own) = clients(&config.tasks_url)?;
        let auth = Upstream::new(
            "auth-service",
            &config.auth_url,
            auth_calls,
            auth_own.clone(),
        )?;
        let tasks = Upstream::new(
            "task-service",
            &config.tasks_url,
            tasks_calls,
            tasks_own.clone(),
        )?;
        let auth_own = auth.through(auth_own);
        let tasks_own = tasks.through(tasks_own);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let (reflection_v1, reflection_v1alpha) = serving::reflection::services();
        let local = Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let closing = CancellationToken::new();
        let router = Arc::new(Router {
            auth,
            tasks,
            local,
            reflection: !config.disable_reflection,
            calls: Budget::new(
                config.max_concurrent_requests,
                config.max_concurrent_requests_per_address,
            ),
            anonymous_streams: Budget::new(
                config.max_anonymous_streams,
                config.max_anonymous_streams_per_address,
            ),
            limits: CallLimits {
                max_body_bytes: config.max_body_bytes,
                request_timeout: config.request_timeout,
            },
            closing: Arc::new(closing.clone()),
        });
        let traced = TraceLayer::new(SharedClassifier::new(classifier()))
            .make_span_with(serving::telemetry::RpcSpan)
            .on_response(DefaultOnResponse::new().level(Level::DEBUG))
            .on_eos(DefaultOnEos::new().level(Level::DEBUG))
            .on_failure(DefaultOnFailure::new().level(Level::WARN))
            .layer(
                serving::metrics::RpcMetricsLayer::new("gateway").layer(tower::service_fn(
                    move |request| {
                        let router = router.clone();
                        async move { Ok::<_, Infallible>(router.route(request).await) }
                    },
                )),
            );
        let readiness = Readiness::default();
        let entry = Entry {
            grpc: BoxCloneService::new(GrpcWebLayer::new().layer(traced)),
            connect: Arc::new(Connect::new(
                &[
                    todo_proto::FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                ],
                &CONNECT_SERVICES,
                config.max_body_bytes,
            )),
            jwks: Arc::new(Jwks::new(auth_own.clone(), config.jwks_cache_ttl)),
            web: config.web_root.as_deref().map(web::app),
            readiness: readiness.clone(),
        };
        let service = cors::layer(&config.allowed_origins)?.layer(entry);
        Ok(Self {
            service,
            health_reporter,
            auth: auth_own,
            tasks: tasks_own,
            closing,
            readiness,
        })
    }
}

/// gRPC statuses that answer the caller's request rather than report a
/// fault of this system.
fn classifier() -> GrpcErrorsAsFailures {
    [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    )
}

/// Below CORS: names the call, answers GETs (the JWKS document, probes,
/// the web app), turns Connect calls into gRPC ones, refuses content types
/// nobody speaks, and hands gRPC and gRPC-Web to the gRPC-Web layer.
#[derive(Clone)]
pub struct Entry {
    grpc: BoxCloneService<Request<Body>, Response<Body>, Infallible>,
    connect: Arc<Connect>,
    jwks: Arc<Jwks>,
    web: Option<WebApp>,
    readiness: Readiness,
}

/// A small plain-text answer (probes, 404).
fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Service<Request<Body>> for Entry {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let request_id = headers::assign_request_id(request.headers_mut());
        // Every call is part of a trace, which the gateway starts when the
        // client did not.
        serving::trace_context::ensure_traceparent(request.headers_mut());
        if is_grpc_web(&request) {
            request.extensions_mut().insert(GrpcWebCaller);
        }
        let this = self.clone();
        Box::pin(async move {
            let mut response = this.respond(request).await;
            response
                .headers_mut()
                .insert(headers::X_REQUEST_ID, request_id);
            Ok(response)
        })
    }
}

impl Entry {
    async fn respond(self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        if method == Method::GET || method == Method::HEAD {
            return match request.uri().path() {
                jwks::PATH => self.jwks.respond().await,
                "/healthz" => plain(StatusCode::OK, "ok\n".to_owned()),
                "/readyz" => match self.readiness.check() {
                    Ok(detail) => plain(StatusCode::OK, format!("ready: {detail}\n")),
                    Err(reason) => plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {reason}\n"),
                    ),
                },
                _ => match self.web {
                    Some(web) => web::respond(web, request).await,
                    None => plain(StatusCode::NOT_FOUND, "not found\n".to_owned()),
                },
            };
        }
        match connect::protocol(request.headers()) {
            Protocol::Grpc => match self.grpc.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            },
            Protocol::Connect(kind, codec) => {
                self.connect.call(request, kind, codec, self.grpc).await
            }
            Protocol::Unsupported => connect::unsupported_media_type(),
        }
    }
}

/// The content types of gRPC-Web, binary and text (as tonic-web knows them).
fn is_grpc_web<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            matches!(
                value,
                "application/grpc-web"
                    | "application/grpc-web+proto"
                    | "application/grpc-web-text"
                    | "application/grpc-web-text+proto"
            )
        })
}
