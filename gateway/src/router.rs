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
//! Every call first takes a concurrency permit (see [`crate::limits`]).

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::{Status, body::Body, service::Routes};
use tower::ServiceExt;

use crate::{
    limits::Guarded,
    upstream::{CallLimits, Upstream},
};

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

const AUTH_PREFIX: &str = "/auth.v1.AuthService/";
const TASKS_PREFIX: &str = "/tasks.v1.TaskService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const REFLECTION_PREFIXES: [&str; 2] =
    ["/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

pub struct Router {
    pub auth: Upstream,
    pub tasks: Upstream,
    /// Health, and reflection when enabled.
    pub local: Routes,
    pub reflection: bool,
    pub permits: Arc<Semaphore>,
    pub limits: CallLimits,
}

impl Router {
    /// Answers one call; never fails (every failure is a gRPC status).
    pub async fn route(&self, request: Request<Body>) -> Response<Body> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!("concurrency limit reached; refusing a call");
            return crate::status_response(Status::resource_exhausted(
                "the gateway is at its concurrency limit; retry later",
            ));
        };
        let path = request.uri().path();
        let response = if path.starts_with(AUTH_PREFIX) {
            let peer = peer_ip(&request);
            self.auth.forward(request, peer, self.limits).await
        } else if path.starts_with(TASKS_PREFIX) {
            let peer = peer_ip(&request);
            self.tasks.forward(request, peer, self.limits).await
        } else if path.starts_with(HEALTH_PREFIX)
            || (self.reflection && REFLECTION_PREFIXES.iter().any(|prefix| path.starts_with(prefix)))
        {
            match self.local.clone().oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            }
        } else {
            crate::status_response(Status::unimplemented("unknown service or method"))
        };
        response.map(|body| Body::new(Guarded::new(body, permit)))
    }
}

fn peer_ip<B>(request: &Request<B>) -> Option<std::net::IpAddr> {
    request.extensions().get::<PeerAddr>().map(|peer| peer.0.ip())
}
