//! `grpc.health.v1`, driven by what a process depends on.
//!
//! A process is `SERVING` only while its dependency answers (its database,
//! or for the gateway its upstreams). The probe runs in the background, so
//! health reflects an outage within one interval and recovers by itself;
//! on shutdown everything flips to `NOT_SERVING` first, so load balancers
//! stop sending new calls while in-flight ones drain.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;
pub use tonic_health::{ServingStatus, server::HealthReporter};

/// How often the dependency is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Sets `status` for the whole process (`""`) and each of `services`.
pub async fn set_all(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}

/// Probes with `probe` every [`PROBE_INTERVAL`] until `shutdown`, reporting
/// the result for `services`; changes are logged once, not every probe.
pub async fn track<P, F>(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    shutdown: CancellationToken,
    probe: P,
) where
    P: Fn() -> F,
    F: Future<Output = bool>,
{
    let mut last = None;
    loop {
        let up = tokio::select! {
            up = probe() => up,
            () = shutdown.cancelled() => break,
        };
        if last != Some(up) {
            if up {
                tracing::info!("dependencies reachable: SERVING");
            } else {
                tracing::warn!("dependencies unreachable: NOT_SERVING");
            }
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, &services, status).await;
            last = Some(up);
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = shutdown.cancelled() => break,
        }
    }
    set_all(&reporter, &services, ServingStatus::NotServing).await;
}
