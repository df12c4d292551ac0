//! How many calls to the task API this replica takes at once
//! (`--max-calls-in-flight`). A call beyond that is refused at once with
//! `RESOURCE_EXHAUSTED` and a `RetryInfo`, rather than queued.
//!
//! The per-user budgets ([`crate::budget`]) keep one user from taking
//! another's share; this bounds the sum. Without it, a thousand users
//! calling at once all queue for the database pool, and every one of them
//! waits as long as the whole queue takes to drain (Little's law), so the
//! replica stays up but answers too late to be of use. Refusing at once
//! keeps the answered calls fast and tells the others when to come back,
//! which a client or a load balancer can act on (another replica, later).
//!
//! A call holds its place until its response is ready: for `WatchTasks`
//! that is when the stream opens (streams have their own cap, in
//! [`crate::events`]). Health and reflection are outside the limit, so an
//! overloaded replica still answers its probes.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::{body::Body, server::NamedService};
use tower::Service;

/// The least a refused caller is told to wait; each is told a time drawn
/// at random up to twice this ([`serving::status::overloaded`]). At
/// ~10k calls/s a replica drains its 256 places many times over meanwhile.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// `inner` with at most a fixed number of calls in flight.
#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    places: Arc<Semaphore>,
}

impl<S> InFlightLimit<S> {
    /// `inner`, taking at most `places` calls at once (at least one).
    pub fn new(inner: S, places: usize) -> Self {
        Self {
            inner,
            places: Arc::new(Semaphore::new(places.max(1))),
        }
    }
}

impl<S: NamedService> NamedService for InFlightLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for InFlightLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            serving::metrics::metrics().refused("task-service", "calls_in_flight");
            let status = serving::status::overloaded(
                "the task-service is at capacity; retry later",
                RETRY_AFTER,
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(place);
            response
        })
    }
}
