//! Sessions end everywhere at once: the task-service follows the
//! auth-service's session events (`auth.internal.v1.SessionEventsService`)
//! and, within about a second of a session ending or an account being
//! deleted, refuses its access tokens and ends its `WatchTasks` streams
//! with `UNAUTHENTICATED` (checklist S1, S3), with no call to the
//! auth-service on the request path.
//!
//! - [`Revocations`] remembers ended sessions and deleted users only until
//!   their tokens would have expired anyway (each event says when), so its
//!   memory is bounded by the sessions ended in one token lifetime.
//! - [`follow`] keeps one subscription open, resuming after the last
//!   sequence it saw whenever the stream breaks; a new process replays
//!   every retained event, so nothing is missed across restarts of either
//!   side (checklist S2). While the stream is down the process keeps
//!   serving, with the documented bound (an ended session's tokens live to
//!   their `exp`); it says so in the log and in its health, under the name
//!   [`HEALTH_NAME`].
//! - An account deletion is recorded in the tasks database first; the
//!   [`delete_accounts`] worker then deletes the account's tasks in
//!   batches, idempotently (two replicas may both do it), once at once and
//!   once more when the account's last tokens have expired, and survives a
//!   restart half-way.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use access_token::Identity;
use chrono::{DateTime, Utc};
use serving::{CancellationToken, clock::Clock, health::HealthReporter};
use todo_proto::auth::internal::v1::{
    self as pb, session_events_service_client::SessionEventsServiceClient,
};
use tokio::sync::Notify;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::{events::Hub, store::Store};

/// The health name under which the task-service reports whether it is
/// following the session events (`SERVING`) or not (`NOT_SERVING`); the
/// service itself stays `SERVING` either way.
pub const HEALTH_NAME: &str = "auth.internal.v1.SessionEventsService";

/// Tasks deleted per statement when an account goes.
const DELETION_BATCH: usize = 500;

/// Sessions and users whose tokens are refused, each until its tokens
/// would have expired anyway (Unix seconds).
#[derive(Default)]
pub struct Revocations {
    sessions: Mutex<HashMap<Uuid, i64>>,
    users: Mutex<HashMap<Uuid, i64>>,
}

impl Revocations {
    /// Whether `identity`'s session has ended or its account is gone.
    pub fn refuses(&self, identity: &Identity) -> bool {
        lock(&self.sessions).contains_key(&identity.session_id)
            || lock(&self.users).contains_key(&identity.user_id)
    }

    fn end_session(&self, session: Uuid, until: i64) {
        lock(&self.sessions).insert(session, until);
    }

    fn delete_user(&self, user: Uuid, until: i64) {
        lock(&self.users).insert(user, until);
    }

    /// Forgets what no token can outlive any more.
    pub fn forget_expired(&self, now: i64) {
        lock(&self.sessions).retain(|_, until| *until >= now);
        lock(&self.users).retain(|_, until| *until >= now);
    }

    /// How many sessions and users are remembered.
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.sessions).len(), lock(&self.users).len())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What following the events acts on.
pub struct Follower {
    pub revocations: Arc<Revocations>,
    pub hub: Arc<Hub>,
    pub store: Store,
    pub clock: Clock,
    pub health: HealthReporter,
    /// Woken when an account deletion is recorded.
    pub deletions: Arc<Notify>,
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

impl Follower {
    /// Acts on one event; an error means it must be received again.
    async fn apply(&self, event: &pb::SessionEvent) -> crate::error::Result<()> {
        let kind = match pb::SessionEventKind::try_from(event.kind) {
            Ok(pb::SessionEventKind::SessionEnded) => "session_ended",
            Ok(pb::SessionEventKind::AccountDeleted) => "account_deleted",
            _ => "unknown",
        };
        serving::metrics::metrics()
            .session_events_applied
            .get_or_create(&serving::metrics::OutcomeLabels {
                component: "task-service",
                outcome: kind,
            })
            .inc();
        let (Ok(user), Some(expire)) = (
            Uuid::try_parse(&event.user_id),
            time(event.tokens_expire_time.as_ref()),
        ) else {
            tracing::error!(
                sequence = event.sequence,
                "malformed session event; skipped"
            );
            return Ok(());
        };
        match pb::SessionEventKind::try_from(event.kind) {
            Ok(pb::SessionEventKind::SessionEnded) => {
                let Ok(session) = Uuid::try_parse(&event.session_id) else {
                    tracing::error!(sequence = event.sequence, "session event without a session");
                    return Ok(());
                };
                self.revocations.end_session(session, expire.timestamp());
                self.hub.end_session(user, session);
                tracing::debug!(%user, %session, "session ended");
            }
            Ok(pb::SessionEventKind::AccountDeleted) => {
                self.revocations.delete_user(user, expire.timestamp());
                self.hub.end_user(user);
                let deleted = time(event.event_time.as_ref()).unwrap_or_else(|| self.clock.now());
                self.store
                    .record_account_deletion(user, deleted, expire)
                    .await?;
                self.deletions.notify_one();
                tracing::info!(%user, "account deleted; deleting its tasks");
            }
            _ => tracing::warn!(
                sequence = event.sequence,
                "unknown session event kind; skipped"
            ),
        }
        Ok(())
    }

    async fn report(&self, following: bool) {
        serving::metrics::metrics()
            .session_events_following
            .set(i64::from(following));
        let status = if following {
            serving::health::ServingStatus::Serving
        } else {
            serving::health::ServingStatus::NotServing
        };
        self.health.set_service_status(HEALTH_NAME, status).await;
    }
}

/// Follows the session events at `endpoint` until `shutdown`, resuming
/// after the last sequence seen whenever the stream breaks.
pub async fn follow(endpoint: Endpoint, follower: Follower, shutdown: CancellationToken) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let url = endpoint.uri().to_string();
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let mut after = 0i64;
    let mut backoff = Duration::from_millis(100);
    let mut was_following = true;
    follower.report(false).await;
    loop {
        let subscribed = async {
            let mut client = SessionEventsServiceClient::new(endpoint.connect().await?);
            let stream = client
                .subscribe(pb::SubscribeRequest {
                    after_sequence: after,
                })
                .await?
                .into_inner();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(stream)
        };
        let result = tokio::select! {
            result = subscribed => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(mut stream) => {
                tracing::info!(%url, after, "following session events");
                follower.report(true).await;
                was_following = true;
                backoff = Duration::from_millis(100);
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        () = shutdown.cancelled() => return,
                    };
                    match message {
                        Ok(Some(pb::SubscribeResponse { event: Some(event) })) => {
                            if let Err(error) = follower.apply(&event).await {
                                // Not acknowledged: received again after
                                // the reconnect.
                                tracing::warn!(%error, sequence = event.sequence, "cannot apply a session event; reconnecting");
                                break;
                            }
                            after = event.sequence;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(%status, "session event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                if was_following {
                    tracing::warn!(%url, %error, "cannot follow session events; an ended session's tokens are honoured until they expire, retrying");
                }
            }
        }
        if was_following {
            follower.report(false).await;
            was_following = false;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Deletes the tasks of deleted accounts until `shutdown`: at start (a
/// deletion half done before a restart), whenever one is recorded, and
/// again once an account's tokens have expired, then marks it done.
pub async fn delete_accounts(
    store: Store,
    clock: Clock,
    recorded: Arc<Notify>,
    shutdown: CancellationToken,
) {
    const RECHECK: Duration = Duration::from_secs(30);
    loop {
        match store.pending_account_deletions().await {
            Ok(pending) => {
                for (owner, tokens_expire) in pending {
                    if let Err(error) = delete_account(&store, &clock, owner, tokens_expire).await {
                        tracing::warn!(%owner, %error, "cannot delete a deleted account's tasks yet");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the pending account deletions"),
        }
        tokio::select! {
            () = recorded.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn delete_account(
    store: &Store,
    clock: &Clock,
    owner: Uuid,
    tokens_expire: DateTime<Utc>,
) -> crate::error::Result<()> {
    // Sampled before the sweep: a write by a token valid until
    // `tokens_expire` may land during it, so only a sweep that began after
    // that can be the last.
    let began = clock.now();
    let mut deleted = 0;
    loop {
        let batch = store.delete_tasks_of(owner, DELETION_BATCH).await?;
        deleted += batch;
        if batch < DELETION_BATCH as u64 {
            break;
        }
    }
    if deleted > 0 {
        tracing::info!(%owner, deleted, "deleted a deleted account's tasks");
    }
    if began > tokens_expire {
        store.finish_account_deletion(owner, clock.now()).await?;
    }
    Ok(())
}
