//! Live task changes for `WatchTasks`: the [`Feed`] a store commits its
//! writes through, and the [`Hub`] that fans committed changes out to the
//! watchers of the task's owner.
//!
//! How a change reaches the hub depends on the database, and is the one
//! thing the hub does not know:
//!
//! - **SQLite** is one process: [`Feed::commit`] hands the event to the hub
//!   right after the commit, holding a lock taken before it, so events leave
//!   in commit order.
//! - **PostgreSQL** may have many replicas: [`Feed::commit`] runs
//!   `pg_notify` inside the writing transaction (delivered only if it
//!   commits, in commit order) and every replica's [`listen`] publishes what
//!   it hears to its own hub, its own writes included, so local and remote
//!   watchers see one ordering.
//!
//! The notice carries the whole task as JSON when it fits PostgreSQL's
//! 8000-byte payload limit, which is almost always: a listener can then
//! forward it without a query, and the event shows the task exactly as that
//! write left it. Only a task with a very long description is sent as its
//! id, and the listener re-reads it (skipping it if it is already gone; its
//! delete event follows).
//!
//! A watcher sees every change committed after it subscribed. On
//! PostgreSQL, where notices travel asynchronously, it may also see a change
//! committed just before (its notice was still in flight): events are
//! "the task is now like this", so applying one twice is harmless.
//!
//! Each watcher has its own bounded queue. A watcher whose queue is full is
//! too far behind: it is ended with `RESOURCE_EXHAUSTED` instead of letting
//! memory grow or slowing everyone else down. When the change feed itself
//! breaks (the PostgreSQL listener lost its connection), every watcher is
//! ended with `UNAVAILABLE` so clients reconnect and re-read, rather than
//! sitting on a stream that silently missed changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serving::{
    CancellationToken,
    postgres_pool::PgPool,
    sql::{Tx, statement},
};
use sqlx::postgres::{PgListener, PgPoolOptions};
use todo_proto::tasks::v1 as proto;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    domain::{self, Task},
    error::{Error, Result},
    store::Store,
};

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

impl From<EventKind> for proto::TaskEventType {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Created => Self::Created,
            EventKind::Updated => Self::Updated,
            EventKind::Deleted => Self::Deleted,
        }
    }
}

/// One committed change, as a watcher receives it.
pub type Event = Arc<proto::WatchTasksResponse>;

/// The event for `task` after a change of `kind` at `time`.
pub fn event(kind: EventKind, task: &proto::Task, time: DateTime<Utc>) -> Event {
    Arc::new(proto::WatchTasksResponse {
        event_type: proto::TaskEventType::from(kind) as i32,
        task: Some(task.clone()),
        event_time: Some(domain::timestamp(time)),
    })
}

/// The event for a stored task.
pub fn task_event(kind: EventKind, task: &Task, time: DateTime<Utc>) -> Event {
    event(kind, &proto::Task::from(task), time)
}

/// Where a store commits its writes, so that each committed change becomes
/// an event (see the module doc).
pub enum Feed {
    /// SQLite: straight to this process's hub, in commit order.
    InProcess {
        hub: Arc<Hub>,
        /// Taken before a commit and held until its event is published.
        order: tokio::sync::Mutex<()>,
    },
    /// PostgreSQL: `pg_notify` in the transaction; [`listen`] publishes.
    Postgres,
}

/// The channel every replica listens on.
const CHANNEL: &str = "tasks_events";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD_BYTES: usize = 7900;

impl Feed {
    pub fn in_process(hub: Arc<Hub>) -> Self {
        Self::InProcess {
            hub,
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// Commits `tx`, whose write left `task` after a change of `kind` at
    /// `time`, and makes that change an event, exactly when it commits.
    pub async fn commit(
        &self,
        mut tx: Tx,
        kind: EventKind,
        task: &Task,
        time: DateTime<Utc>,
    ) -> Result<()> {
        match self {
            Self::Postgres => {
                notify(&mut tx, kind, task, time).await?;
                tx.commit().await?;
            }
            Self::InProcess { hub, order } => {
                let _turn = order.lock().await;
                tx.commit().await?;
                hub.publish(task.owner, task_event(kind, task, time));
            }
        }
        Ok(())
    }
}

/// What travels through `pg_notify`.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    kind: EventKind,
    owner: Uuid,
    id: Uuid,
    time: DateTime<Utc>,
    /// The task after the change, when it fits the payload limit.
    task: Option<Task>,
}

/// Queues the notice of a change in the current transaction.
async fn notify(tx: &mut Tx, kind: EventKind, task: &Task, time: DateTime<Utc>) -> Result<()> {
    let full = Notice {
        kind,
        owner: task.owner,
        id: task.id,
        time,
        task: Some(task.clone()),
    };
    let mut payload =
        serde_json::to_string(&full).map_err(|error| Error::Internal(error.to_string()))?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        let slim = Notice { task: None, ..full };
        payload =
            serde_json::to_string(&slim).map_err(|error| Error::Internal(error.to_string()))?;
    }
    statement("SELECT pg_notify($1, $2)")
        .text(CHANNEL)
        .text(payload)
        .execute(tx)
        .await?;
    Ok(())
}

/// Listens for the changes of every replica and publishes them to `hub`
/// until `shutdown`. While the listener is not connected the hub is marked
/// unavailable: open watchers end with `UNAVAILABLE` (they may have missed
/// changes) and new ones are refused until it is back.
///
/// The listener holds a connection of its own, opened with `pool`'s
/// options, one more than the pool's.
pub async fn listen(pool: PgPool, store: Store, hub: Arc<Hub>, shutdown: CancellationToken) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(pool.connect_options().clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let result = tokio::select! {
            result = connected => result,
            () = shutdown.cancelled() => break,
        };
        match result {
            Ok(mut listener) => {
                hub.set_available(true);
                backoff = Duration::from_millis(100);
                tracing::info!("listening for task changes");
                loop {
                    let received = tokio::select! {
                        received = listener.try_recv() => received,
                        () = shutdown.cancelled() => {
                            hub.set_available(false);
                            return;
                        }
                    };
                    match received {
                        Ok(Some(notification)) => {
                            dispatch(&store, &hub, notification.payload()).await;
                        }
                        Ok(None) => {
                            // Reconnected, but notices sent meanwhile are lost.
                            tracing::warn!(
                                "task change listener reconnected; ending open watchers"
                            );
                            hub.set_available(false);
                            hub.set_available(true);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "task change listener lost the database");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot listen for task changes; retrying"),
        }
        hub.set_available(false);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    hub.set_available(false);
}

async fn dispatch(store: &Store, hub: &Hub, payload: &str) {
    let notice: Notice = match serde_json::from_str(payload) {
        Ok(notice) => notice,
        Err(error) => {
            tracing::error!(%error, "unreadable task change notice");
            return;
        }
    };
    let task = match (notice.task, notice.kind) {
        (Some(task), _) => proto::Task::from(&task),
        (None, EventKind::Deleted) => proto::Task {
            id: notice.id.to_string(),
            ..proto::Task::default()
        },
        (None, _) => match store.get(notice.owner, notice.id).await {
            Ok(Some(task)) => proto::Task::from(&task),
            Ok(None) => return,
            Err(error) => {
                // Skipping it silently would leave watchers wrong; end
                // them all so they reconnect and re-read.
                tracing::warn!(%error, "cannot re-read a changed task; ending open watchers");
                hub.set_available(false);
                hub.set_available(true);
                return;
            }
        },
    };
    hub.publish(notice.owner, event(notice.kind, &task, notice.time));
}

/// Most open watchers one user may have on one replica: each holds a queue,
/// so one account cannot make the process buffer without bound.
pub const MAX_WATCHERS_PER_USER: usize = 32;

/// Why a new watcher was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    FeedDown,
    TooManyWatchers,
}

/// Why a watcher's stream ended (other than the client leaving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its queue overflowed.
    TooFarBehind,
    /// The change feed is down.
    FeedLost,
    /// The session that opened it ended, or the account was deleted.
    SessionEnded,
}

struct Slot {
    id: u64,
    /// The session whose token opened the stream.
    session: Uuid,
    queue: mpsc::Sender<Event>,
    end: Arc<OnceLock<End>>,
}

#[derive(Default)]
struct State {
    available: bool,
    next_id: u64,
    watchers: HashMap<Uuid, Vec<Slot>>,
    /// Open subscriptions per owner, counted until each is dropped: a
    /// watcher the hub has let go (too far behind, feed lost) still holds
    /// a stream until its client reads the end, so it still counts against
    /// [`MAX_WATCHERS_PER_USER`].
    open: HashMap<Uuid, usize>,
}

/// The fan-out point of one process.
pub struct Hub {
    state: Mutex<State>,
    queue_len: usize,
}

impl Hub {
    /// A hub whose watchers may queue `queue_len` events. `available` says
    /// whether the feed is up at start (SQLite: always; PostgreSQL: once its
    /// listener is listening).
    pub fn new(queue_len: usize, available: bool) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                available,
                ..State::default()
            }),
            queue_len: queue_len.max(1),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code panics while holding the lock; if one did, the map is
        // still consistent, so recover rather than poison every watcher.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts watching `owner`'s tasks for a stream opened by `session`,
    /// unless the feed is down or the owner already has
    /// [`MAX_WATCHERS_PER_USER`] watchers here.
    pub fn subscribe(
        self: &Arc<Self>,
        owner: Uuid,
        session: Uuid,
    ) -> Result<Subscription, Refused> {
        let mut state = self.state();
        if !state.available {
            return Err(Refused::FeedDown);
        }
        if state.open.get(&owner).copied().unwrap_or(0) >= MAX_WATCHERS_PER_USER {
            return Err(Refused::TooManyWatchers);
        }
        *state.open.entry(owner).or_default() += 1;
        serving::metrics::metrics().watch_streams_open.inc();
        let (queue, receiver) = mpsc::channel(self.queue_len);
        let end = Arc::new(OnceLock::new());
        state.next_id += 1;
        let id = state.next_id;
        state.watchers.entry(owner).or_default().push(Slot {
            id,
            session,
            queue,
            end: end.clone(),
        });
        Ok(Subscription {
            receiver,
            end,
            hub: self.clone(),
            owner,
            id,
        })
    }

    /// Delivers `event` to every watcher of `owner`, ending those too far
    /// behind. Never waits.
    pub fn publish(&self, owner: Uuid, event: Event) {
        let mut state = self.state();
        let Some(slots) = state.watchers.get_mut(&owner) else {
            return;
        };
        slots.retain(|slot| match slot.queue.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = slot.end.set(End::TooFarBehind);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if slots.is_empty() {
            state.watchers.remove(&owner);
        }
    }

    /// Ends the streams opened by `session` of `owner`.
    pub fn end_session(&self, owner: Uuid, session: Uuid) {
        self.end_where(owner, |slot| slot.session == session);
    }

    /// Ends every stream of `owner`.
    pub fn end_user(&self, owner: Uuid) {
        self.end_where(owner, |_| true);
    }

    fn end_where(&self, owner: Uuid, ends: impl Fn(&Slot) -> bool) {
        let mut state = self.state();
        let Some(slots) = state.watchers.get_mut(&owner) else {
            return;
        };
        // Dropping a slot drops its queue's sender: the stream wakes, reads
        // its end and stops.
        slots.retain(|slot| {
            let ending = ends(slot);
            if ending {
                let _ = slot.end.set(End::SessionEnded);
            }
            !ending
        });
        if slots.is_empty() {
            state.watchers.remove(&owner);
        }
    }

    /// Marks the feed up or down; going down ends every watcher.
    pub fn set_available(&self, available: bool) {
        let mut state = self.state();
        state.available = available;
        if !available {
            for slot in state.watchers.drain().flat_map(|(_, slots)| slots) {
                let _ = slot.end.set(End::FeedLost);
            }
        }
    }

    /// Whether the feed is up (new watchers are accepted).
    pub fn available(&self) -> bool {
        self.state().available
    }

    /// How many watchers are connected (for tests and logs).
    pub fn watcher_count(&self) -> usize {
        self.state().watchers.values().map(Vec::len).sum()
    }

    fn unsubscribe(&self, owner: Uuid, id: u64) {
        serving::metrics::metrics().watch_streams_open.dec();
        let mut state = self.state();
        if let Some(open) = state.open.get_mut(&owner) {
            *open -= 1;
            if *open == 0 {
                state.open.remove(&owner);
            }
        }
        if let Some(slots) = state.watchers.get_mut(&owner) {
            slots.retain(|slot| slot.id != id);
            if slots.is_empty() {
                state.watchers.remove(&owner);
            }
        }
    }
}

/// One watcher's end of the hub; dropping it unsubscribes.
pub struct Subscription {
    receiver: mpsc::Receiver<Event>,
    end: Arc<OnceLock<End>>,
    hub: Arc<Hub>,
    owner: Uuid,
    id: u64,
}

impl Subscription {
    /// The next event, or why there will be none. An ended watcher stops at
    /// once, even with events still queued: it must re-read anyway.
    pub async fn next(&mut self) -> Result<Event, End> {
        if let Some(end) = self.end.get() {
            return Err(*end);
        }
        match self.receiver.recv().await {
            Some(event) => match self.end.get() {
                Some(end) => Err(*end),
                None => Ok(event),
            },
            None => Err(self.end.get().copied().unwrap_or(End::FeedLost)),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.owner, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_event(title: &str) -> Event {
        event(
            EventKind::Created,
            &proto::Task {
                title: title.into(),
                ..proto::Task::default()
            },
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn events_reach_only_the_owners_watchers_in_order() {
        let hub = Hub::new(8, true);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut alice_1 = hub.subscribe(alice, Uuid::now_v7()).unwrap();
        let mut alice_2 = hub.subscribe(alice, Uuid::now_v7()).unwrap();
        let mut bob_1 = hub.subscribe(bob, Uuid::now_v7()).unwrap();
        hub.publish(alice, some_event("a"));
        hub.publish(alice, some_event("b"));
        for watcher in [&mut alice_1, &mut alice_2] {
            assert_eq!(
                watcher.next().await.unwrap().task.as_ref().unwrap().title,
                "a"
            );
            assert_eq!(
                watcher.next().await.unwrap().task.as_ref().unwrap().title,
                "b"
            );
        }
        assert!(bob_1.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_watcher_too_far_behind_is_ended_and_others_go_on() {
        let hub = Hub::new(2, true);
        let owner = Uuid::now_v7();
        let mut slow = hub.subscribe(owner, Uuid::now_v7()).unwrap();
        let mut fast = hub.subscribe(owner, Uuid::now_v7()).unwrap();
        for i in 0..3 {
            hub.publish(owner, some_event(&i.to_string()));
            if i < 2 {
                assert!(fast.next().await.is_ok());
            }
        }
        assert_eq!(slow.next().await.unwrap_err(), End::TooFarBehind);
        assert_eq!(fast.next().await.unwrap().task.as_ref().unwrap().title, "2");
        assert_eq!(hub.watcher_count(), 1);
    }

    #[tokio::test]
    async fn losing_the_feed_ends_every_watcher_and_refuses_new_ones() {
        let hub = Hub::new(2, true);
        let mut watcher = hub.subscribe(Uuid::now_v7(), Uuid::now_v7()).unwrap();
        hub.set_available(false);
        assert_eq!(watcher.next().await.unwrap_err(), End::FeedLost);
        assert_eq!(
            hub.subscribe(Uuid::now_v7(), Uuid::now_v7()).err(),
            Some(Refused::FeedDown)
        );
        hub.set_available(true);
        assert!(hub.subscribe(Uuid::now_v7(), Uuid::now_v7()).is_ok());
    }

    #[tokio::test]
    async fn one_user_cannot_open_watchers_without_bound() {
        let hub = Hub::new(2, true);
        let owner = Uuid::now_v7();
        let watchers: Vec<_> = (0..MAX_WATCHERS_PER_USER)
            .map(|_| hub.subscribe(owner, Uuid::now_v7()).unwrap())
            .collect();
        assert_eq!(
            hub.subscribe(owner, Uuid::now_v7()).err(),
            Some(Refused::TooManyWatchers)
        );
        assert!(
            hub.subscribe(Uuid::now_v7(), Uuid::now_v7()).is_ok(),
            "other users are not affected"
        );
        drop(watchers);
        assert!(hub.subscribe(owner, Uuid::now_v7()).is_ok());
    }

    #[tokio::test]
    async fn a_watcher_let_go_still_counts_until_its_stream_is_dropped() {
        let hub = Hub::new(1, true);
        let owner = Uuid::now_v7();
        let mut watchers: Vec<_> = (0..MAX_WATCHERS_PER_USER)
            .map(|_| hub.subscribe(owner, Uuid::now_v7()).unwrap())
            .collect();
        // Nobody reads: every queue overflows and the hub lets them all go.
        for i in 0..3 {
            hub.publish(owner, some_event(&format!("flood {i}")));
        }
        assert_eq!(hub.watcher_count(), 0);
        assert_eq!(
            hub.subscribe(owner, Uuid::now_v7()).err(),
            Some(Refused::TooManyWatchers),
            "stalled streams are still open"
        );
        watchers.pop();
        assert!(hub.subscribe(owner, Uuid::now_v7()).is_ok());
    }

    #[tokio::test]
    async fn an_ended_session_ends_its_streams_only() {
        let hub = Hub::new(4, true);
        let (owner, session, other_session) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut ended = hub.subscribe(owner, session).unwrap();
        let mut kept = hub.subscribe(owner, other_session).unwrap();
        hub.end_session(owner, session);
        assert_eq!(ended.next().await.unwrap_err(), End::SessionEnded);
        hub.publish(owner, some_event("still here"));
        assert!(kept.next().await.is_ok());
        hub.end_user(owner);
        assert_eq!(kept.next().await.unwrap_err(), End::SessionEnded);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let hub = Hub::new(2, true);
        let watcher = hub.subscribe(Uuid::now_v7(), Uuid::now_v7()).unwrap();
        assert_eq!(hub.watcher_count(), 1);
        drop(watcher);
        assert_eq!(hub.watcher_count(), 0);
    }
}
