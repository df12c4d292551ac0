//! Which service answers a call, chosen by its path's service name.
//!
//! gRPC paths are `/<package>.<Service>/<Method>`, so the service name is
//! enough to route, and a method a service adds later is routed with no
//! change here:
//!
//! - `/auth.v1.AuthService/*` and `/tasks.v1.TaskService/*` go upstream
//!   ([`crate::upstream`]), body untouched;
//! - `/grpc.health.v1.Health/*` and `/grpc.reflection.*` are answered by
//!   the gateway itself (health folds in both upstreams; reflection lists
//!   both APIs, unless switched off);
//! - anything else is `UNIMPLEMENTED`, as a gRPC server would answer.
//!
//! Every call first takes a place in its client address's count, then a
//! global concurrency permit (see [`crate::limits`]); either refusal is
//! `RESOURCE_EXHAUSTED` with a `RetryInfo`. The streams anybody may open
//! without an account and keep open for ever (health `Watch`, reflection)
//! draw on a small budget of their own, so they can never take a permit
//! from signed-in users' calls.
//!
//! One more translation happens here for gRPC-Web callers: a gRPC server
//! answers an error with a "trailers-only" response, the status in the
//! HTTP headers and no body. For a gRPC-Web caller the gateway moves that
//! status into a trailers frame at the end of the body, where every
//! gRPC-Web client looks for it, so status and details (`BadRequest`,
//! `RetryInfo` in `grpc-status-details-bin`) arrive the same way for
//! successes and failures, and a browser need not be allowed to read them
//! from the headers.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body::Frame;
use serving::CancellationToken;
use tonic::{Status, body::Body, service::Routes};
use tower::ServiceExt;

use crate::{
    drain::{self, Closing},
    limits::{Budget, Guarded, Refused},
    upstream::{CallLimits, Upstream},
};

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Marks a request that arrived as gRPC-Web (set before the gRPC-Web layer
/// rewrites its content type to plain gRPC).
#[derive(Debug, Clone, Copy)]
pub struct GrpcWebCaller;

/// The headers that carry a call's status.
const STATUS_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
];

const AUTH_PREFIX: &str = "/auth.v1.AuthService/";
const TASKS_PREFIX: &str = "/tasks.v1.TaskService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
const REFLECTION_PREFIXES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

pub struct Router {
    pub auth: Upstream,
    pub tasks: Upstream,
    /// Health, and reflection when enabled.
    pub local: Routes,
    pub reflection: bool,
    /// Calls in flight, in all and per client address (the connection's
    /// peer, the same address sent upstream in `x-forwarded-for`).
    pub calls: Budget,
    /// Health `Watch` and reflection streams, in all and per address.
    pub anonymous_streams: Budget,
    pub limits: CallLimits,
    /// Fires when the shutdown grace has run out (see [`crate::drain`]).
    pub closing: Arc<CancellationToken>,
}

impl Router {
    /// Answers one call; never fails (every failure is a gRPC status).
    pub async fn route(&self, request: Request<Body>) -> Response<Body> {
        let grpc_web = request.extensions().get::<GrpcWebCaller>().is_some();
        let in_trailers = |response| {
            if grpc_web {
                status_into_trailers(response)
            } else {
                response
            }
        };
        let path = request.uri().path();
        let anonymous_stream = path == HEALTH_WATCH || is_reflection(path);
        let budget = if anonymous_stream {
            &self.anonymous_streams
        } else {
            &self.calls
        };
        let peer = peer_ip(&request);
        let permits = match budget.try_acquire(peer) {
            Ok(permits) => permits,
            Err(refused) => {
                let message = match (refused, anonymous_stream) {
                    (Refused::Address, false) => {
                        "too many calls in flight from your address; retry later"
                    }
                    (Refused::Global, false) => {
                        "the gateway is at its concurrency limit; retry later"
                    }
                    (Refused::Address, true) => {
                        "too many health or reflection streams open from your address; close one first"
                    }
                    (Refused::Global, true) => {
                        "too many health or reflection streams are open; retry later"
                    }
                };
                serving::metrics::metrics().refused(
                    "gateway",
                    match (refused, anonymous_stream) {
                        (Refused::Address, false) => "calls_per_address",
                        (Refused::Global, false) => "calls",
                        (Refused::Address, true) => "anonymous_streams_per_address",
                        (Refused::Global, true) => "anonymous_streams",
                    },
                );
                tracing::warn!(peer = ?peer.map(serving::address::AddressKey::of), ?refused, anonymous_stream, "refusing a call over its budget");
                return in_trailers(refusal(message));
            }
        };
        let response = tokio::select! {
            response = self.dispatch(request) => response,
            () = self.closing.cancelled() => drain::shutting_down().into_http(),
        };
        let response = in_trailers(response);
        let closing = self.closing.clone();
        response.map(|body| Body::new(Guarded::new(Closing::new(body, closing), permits)))
    }

    async fn dispatch(&self, request: Request<Body>) -> Response<Body> {
        let path = request.uri().path();
        if path.starts_with(AUTH_PREFIX) {
            let peer = peer_ip(&request);
            self.auth.forward(request, peer, self.limits).await
        } else if path.starts_with(TASKS_PREFIX) {
            let peer = peer_ip(&request);
            self.tasks.forward(request, peer, self.limits).await
        } else if path.starts_with(HEALTH_PREFIX) || (self.reflection && is_reflection(path)) {
            match self.local.clone().oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            }
        } else {
            Status::unimplemented("unknown service or method").into_http()
        }
    }
}

/// A load limit's refusal, which tells the client when to retry: a moment
/// drawn at random, so refused clients do not all come back at once.
fn refusal(message: &str) -> Response<Body> {
    serving::status::overloaded(message, std::time::Duration::from_millis(500)).into_http()
}

fn is_reflection(path: &str) -> bool {
    REFLECTION_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// Turns a trailers-only response (status in the headers) into one whose
/// body is a single trailers frame holding that status.
fn status_into_trailers(mut response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key(&STATUS_HEADERS[0]) {
        return response;
    }
    let mut trailers = HeaderMap::new();
    for name in STATUS_HEADERS {
        if let Some(value) = response.headers_mut().remove(&name) {
            trailers.insert(name, value);
        }
    }
    *response.body_mut() = Body::new(TrailersFrame(Some(trailers)));
    response
}

/// A body of one trailers frame. Its size is left unknown on purpose: the
/// gRPC-Web layer turns the trailers into body bytes, so an exact size of
/// zero would make hyper send `content-length: 0` and drop them.
struct TrailersFrame(Option<HeaderMap>);

impl http_body::Body for TrailersFrame {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Status>>> {
        std::task::Poll::Ready(self.0.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

fn peer_ip<B>(request: &Request<B>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
}
