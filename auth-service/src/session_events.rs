//! `auth.internal.v1.SessionEventsService`: the durable, ordered log of
//! ended sessions and deleted accounts, streamed to the services that
//! accept our access tokens (the task-service), so they refuse an ended
//! session's tokens within a second instead of honouring them to `exp`.
//!
//! Each event is a row the store writes in the transaction that ends the
//! session (see `store::sql`), numbered in commit order. A subscriber names
//! the last sequence it saw; the stream sends every retained event after
//! it, then follows the log by looking again every [`POLL_INTERVAL`] (a
//! cheap primary-key range read), so events written by any replica on a
//! shared database reach every subscriber. Nothing is held in memory: a
//! restart of either side loses nothing, and a subscriber that resumes
//! from its last sequence misses nothing.
//!
//! Session-ended events are pruned once their tokens have expired (the
//! maintenance pass in `lib.rs`); account-deleted events are kept longer,
//! for a task-service that was down when the account went.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use serving::CancellationToken;
use todo_proto::auth::internal::v1::{
    self as pb, session_events_service_server::SessionEventsService,
};
use tonic::{Request, Response, Status};

use crate::{
    error::AuthError,
    store::{AuthStore, SessionEvent, SessionEventKind},
};

/// How often an idle stream looks for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most events read (and sent) at once.
const BATCH: i64 = 500;

pub struct SessionEventsApi {
    store: Arc<dyn AuthStore>,
    shutdown: CancellationToken,
}

impl SessionEventsApi {
    pub fn new(store: Arc<dyn AuthStore>, shutdown: CancellationToken) -> Self {
        Self { store, shutdown }
    }
}

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos().cast_signed(),
    }
}

fn message(event: &SessionEvent) -> pb::SubscribeResponse {
    let kind = match event.kind {
        SessionEventKind::SessionEnded => pb::SessionEventKind::SessionEnded,
        SessionEventKind::AccountDeleted => pb::SessionEventKind::AccountDeleted,
    };
    pb::SubscribeResponse {
        event: Some(pb::SessionEvent {
            sequence: event.sequence,
            kind: kind as i32,
            user_id: event.user_id.to_string(),
            session_id: event
                .session_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            event_time: Some(timestamp(event.time)),
            tokens_expire_time: Some(timestamp(event.tokens_expire_time)),
        }),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// Where one subscription is in the log.
struct Follow {
    store: Arc<dyn AuthStore>,
    shutdown: CancellationToken,
    after: i64,
    pending: std::collections::VecDeque<SessionEvent>,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<pb::SubscribeResponse, Status>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = event.sequence;
                return Some((Ok(message(&event)), self));
            }
            match self.store.session_events_after(self.after, BATCH).await {
                Ok(events) if !events.is_empty() => self.pending.extend(events),
                Ok(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                        () = self.shutdown.cancelled() => return None,
                    }
                }
                Err(error) => {
                    // The subscriber resumes from its last sequence.
                    let status: Status = AuthError::from(error).into();
                    return Some((Err(status), self));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl SessionEventsService for SessionEventsApi {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let after = request.into_inner().after_sequence.max(0);
        tracing::info!(after, "session event subscriber connected");
        let follow = Follow {
            store: self.store.clone(),
            shutdown: self.shutdown.clone(),
            after,
            pending: Default::default(),
        };
        let stream = futures::stream::unfold(Some(follow), |state| async move {
            let (item, follow) = state?.next().await?;
            // An error ends the stream after it is sent.
            let next = item.is_ok().then_some(follow);
            Some((item, next))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
