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

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serving::{CancellationToken, health::HealthReporter};
use tracing::Instrument;

use crate::upstream::{self, Upstream};

/// Services the gateway reports health for, besides the process (`""`).
pub const SERVICES: [&str; 2] = ["auth.v1.AuthService", "tasks.v1.TaskService"];

/// What `GET /readyz` answers from: the upstreams as last probed, and
/// whether the gateway is shutting down.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    auth: AtomicBool,
    tasks: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn shutting_down(&self) {
        self.0.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `Ok` with the upstreams' states while the gateway can serve, `Err`
    /// with the reason otherwise. One upstream down makes only its own
    /// routes answer `UNAVAILABLE`, so it does not take every gateway out
    /// of the load balancer (and sign-in with it); both down, or shutting
    /// down, does.
    pub fn check(&self) -> Result<String, String> {
        let state = |up: &AtomicBool| {
            if up.load(Ordering::Relaxed) {
                "serving"
            } else {
                "not serving"
            }
        };
        let detail = format!(
            "auth-service: {}; task-service: {}",
            state(&self.0.auth),
            state(&self.0.tasks)
        );
        if self.0.shutting_down.load(Ordering::Relaxed) {
            Err("shutting down".to_owned())
        } else if !self.0.auth.load(Ordering::Relaxed) && !self.0.tasks.load(Ordering::Relaxed) {
            Err(format!("no upstream is serving ({detail})"))
        } else {
            Ok(detail)
        }
    }
}

/// Tracks both upstreams' health into `reporter` and `readiness` until
/// `shutdown`.
pub async fn track(
    reporter: HealthReporter,
    readiness: Readiness,
    auth: Upstream,
    tasks: Upstream,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("gateway_health");
    let track = serving::health::track(reporter, SERVICES.to_vec(), shutdown, || {
        let (auth, tasks, readiness) = (auth.clone(), tasks.clone(), readiness.clone());
        async move {
            let (auth_up, tasks_up) = tokio::join!(is_serving(&auth), is_serving(&tasks));
            readiness.0.auth.store(auth_up, Ordering::Relaxed);
            readiness.0.tasks.store(tasks_up, Ordering::Relaxed);
            auth_up && tasks_up
        }
    });
    // The span names whose health changed in a log shared with the services.
    track.instrument(span).await;
}

/// Whether `upstream` answers its health check with `SERVING`: any of the
/// replicas calls go to, each asked directly.
async fn is_serving(upstream: &Upstream) -> bool {
    let origins = upstream.origins();
    let checks = origins
        .iter()
        .map(|origin| upstream::probe(upstream.name(), upstream.probe_client(), origin.clone()));
    futures::future::join_all(checks).await.contains(&true)
}
