//! The gateway's own `grpc.health.v1`: `SERVING` only while both services
//! behind it say they are.
//!
//! A load balancer in front of the gateway asks the gateway, not the
//! services, so the gateway's health must fold in theirs: a gateway whose
//! auth-service is down can answer nothing useful. Each probe asks both
//! upstreams' overall health (`""`) with a short deadline, through a
//! connection pool apart from the one that carries clients' calls: a call
//! connection full of open streams would make the probe queue and time
//! out, reporting the gateway's load as the upstream's failure.
//! [`serving::health::track`] runs it in the background, logs changes once
//! and flips everything to `NOT_SERVING` at shutdown. The process (`""`)
//! and both service names report that one combined status.

use std::time::Duration;

use serving::{CancellationToken, health::HealthReporter};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;

use http::Uri;

use crate::upstream::{HttpClient, Upstream};

/// Services the gateway reports health for, besides the process (`""`).
pub const SERVICES: [&str; 2] = ["auth.v1.AuthService", "tasks.v1.TaskService"];

/// Longest wait for one upstream's health answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tracks both upstreams' health into `reporter` until `shutdown`.
pub async fn track(
    reporter: HealthReporter,
    auth: Upstream,
    tasks: Upstream,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("gateway_health");
    let track = serving::health::track(reporter, SERVICES.to_vec(), shutdown, || {
        let (auth, tasks) = (auth.clone(), tasks.clone());
        async move {
            let (auth_up, tasks_up) = tokio::join!(is_serving(&auth), is_serving(&tasks));
            auth_up && tasks_up
        }
    });
    // The span names whose health changed in a log shared with the services.
    track.instrument(span).await;
}

/// Whether `upstream` answers its health check with `SERVING` (one of its
/// serving replicas, when there are several).
async fn is_serving(upstream: &Upstream) -> bool {
    is_serving_at(upstream.client(), upstream.origin()).await
}

/// Whether the service at `origin` answers its health check with `SERVING`.
pub async fn is_serving_at(client: &HttpClient, origin: Uri) -> bool {
    let mut client = HealthClient::with_origin(client.clone(), origin);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(PROBE_TIMEOUT);
    match tokio::time::timeout(PROBE_TIMEOUT, client.check(request)).await {
        Ok(Ok(response)) => response.into_inner().status == ServingStatus::Serving as i32,
        Ok(Err(_)) | Err(_) => false,
    }
}
