//! Per-user budgets: what one signed-in user may take of a replica, so that
//! no user can take another's capacity (checklist I4).
//!
//! - **Calls in flight.** Each user has `--max-calls-in-flight-per-user`
//!   places; a call beyond them waits up to [`QUEUE_WAIT`] for one, then
//!   answers `RESOURCE_EXHAUSTED` with a `RetryInfo`. With the database pool
//!   larger than one user's places, a user firing calls as fast as they can
//!   holds at most their share of connections, and everybody else's calls
//!   still find one. A `WatchTasks` stream holds its place only while it
//!   opens (streams have their own cap, in [`crate::events`]).
//! - **Searches in flight.** A `ListTasks` with a `query` examines up to a
//!   whole search window (about a millisecond of CPU, against a tenth of
//!   that for a page), so each user has `--max-searches-in-flight-per-user`
//!   places for them (default 1) within their calls in flight: a user
//!   firing searches takes one core's worth at a time, not four. A search
//!   past them waits like any call, without holding a database
//!   connection, then answers `RESOURCE_EXHAUSTED`.
//! - **Writes.** Creates, updates, completions and deletes draw from a token
//!   bucket per user (`--max-writes-per-user-per-minute`, with a burst of a
//!   tenth of that, at least 10); an empty bucket answers
//!   `RESOURCE_EXHAUSTED` with the `RetryInfo` of the next token.
//! - **Tasks** are capped per user by the store (`--max-tasks-per-user`),
//!   on the locked counts row, so the cap holds across replicas.
//!
//! The in-memory budgets are per replica, like the auth-service's
//! per-address limits: n replicas give a user up to n shares, which stays
//! proportionate to the capacity those replicas add.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use uuid::Uuid;

/// Longest a call waits for one of its user's places.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The budgets of every user of this replica.
pub struct Budgets {
    in_flight: InFlight,
    searches: InFlight,
    writes: DefaultKeyedRateLimiter<Uuid>,
}

/// What each user may take of a replica (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub calls_in_flight: u32,
    pub searches_in_flight: u32,
    pub writes_per_minute: u32,
}

impl Budgets {
    pub fn new(limits: Limits) -> Self {
        let Limits {
            calls_in_flight,
            searches_in_flight,
            writes_per_minute,
        } = limits;
        let per_minute = NonZeroU32::new(writes_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new((writes_per_minute / 10).max(10)).unwrap_or(NonZeroU32::MIN);
        Self {
            in_flight: InFlight::new(calls_in_flight.max(1) as usize),
            searches: InFlight::new(searches_in_flight.max(1) as usize),
            writes: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// A place for one more call of `user`, waiting up to [`QUEUE_WAIT`].
    pub async fn call(&self, user: Uuid) -> Result<CallPlace, Status> {
        self.in_flight
            .acquire(user)
            .await
            .ok_or_else(|| refused(user, "calls_in_flight_per_user", "calls"))
    }

    /// A place for one more search of `user`, taken within a call's place
    /// and held while the search runs; waits up to [`QUEUE_WAIT`].
    pub async fn search(&self, user: Uuid) -> Result<CallPlace, Status> {
        self.searches
            .acquire(user)
            .await
            .ok_or_else(|| refused(user, "searches_in_flight_per_user", "searches"))
    }

    /// Spends one of `user`'s writes, or says when the next one comes.
    pub fn write(&self, user: Uuid) -> Result<(), Status> {
        self.writes.check_key(&user).map_err(|not_until| {
            serving::metrics::metrics().refused("task-service", "writes_per_user");
            tracing::warn!(%user, "writes per user reached; refusing a write");
            serving::status::resource_exhausted(
                "too many writes for this user; slow down",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Forgets users whose budgets are whole again, bounding memory.
    pub fn forget_idle(&self) {
        self.writes.retain_recent();
        self.writes.shrink_to_fit();
    }
}

/// A call refused for want of one of its user's places of `what`.
fn refused(user: Uuid, reason: &'static str, what: &str) -> Status {
    serving::metrics::metrics().refused("task-service", reason);
    tracing::warn!(%user, reason, "a user's places are all taken; refusing a call");
    serving::status::overloaded(
        &format!("too many {what} in flight for this user; retry later"),
        Duration::from_secs(1),
    )
}

/// Each user's places, by user id. The ids are the auth-service's, so a
/// caller cannot choose keys that collide: foldhash, cheaper than SipHash
/// for the two lookups of every call.
type Users = HashMap<Uuid, Arc<Semaphore>, foldhash::fast::RandomState>;

/// Places for calls, per user; a user's entry is removed when their last
/// call ends, so the map holds only users with calls in flight.
struct InFlight {
    per_user: usize,
    users: Arc<Mutex<Users>>,
}

impl InFlight {
    fn new(per_user: usize) -> Self {
        Self {
            per_user,
            users: Arc::default(),
        }
    }

    async fn acquire(&self, user: Uuid) -> Option<CallPlace> {
        let places = self
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(user)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone();
        let permit = tokio::time::timeout(QUEUE_WAIT, places.acquire_owned()).await;
        let place = CallPlace {
            permit: permit.ok().and_then(Result::ok),
            user,
            users: self.users.clone(),
        };
        // Dropped when refused, which also tidies the map.
        place.permit.is_some().then_some(place)
    }
}

/// One call's place in its user's count; given back when dropped.
pub struct CallPlace {
    permit: Option<OwnedSemaphorePermit>,
    user: Uuid,
    users: Arc<Mutex<Users>>,
}

impl Drop for CallPlace {
    fn drop(&mut self) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // Only the map holds the semaphore now: nobody has, or waits for,
        // a place of this user.
        if users
            .get(&self.user)
            .is_some_and(|places| Arc::strong_count(places) == 1)
        {
            users.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(calls_in_flight: u32, writes_per_minute: u32) -> Limits {
        Limits {
            calls_in_flight,
            searches_in_flight: 1,
            writes_per_minute,
        }
    }

    #[tokio::test]
    async fn a_users_searches_run_one_at_a_time_and_others_searches_do_not_wait() {
        let budgets = Arc::new(Budgets::new(limits(4, 600)));
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = budgets.search(alice).await.unwrap();
        // Bob searches while Alice's search runs.
        drop(budgets.search(bob).await.unwrap());
        // Alice's second search waits for her first, though she has calls
        // in flight to spare.
        let _call = budgets.call(alice).await.unwrap();
        let second = tokio::spawn({
            let budgets = budgets.clone();
            async move { budgets.search(alice).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        drop(first);
        assert!(second.await.unwrap().is_ok());
        assert!(budgets.searches.users.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_search_waiting_too_long_is_refused_with_a_retry_time() {
        let budgets = Budgets::new(limits(4, 600));
        let user = Uuid::now_v7();
        let _running = budgets.search(user).await.unwrap();
        let refused = budgets.search(user).await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("searches"), "{refused:?}");
    }

    #[tokio::test]
    async fn a_user_waits_for_their_own_places_only() {
        let budgets = Arc::new(Budgets::new(limits(2, 600)));
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = budgets.call(alice).await.unwrap();
        let _second = budgets.call(alice).await.unwrap();
        // Bob is not affected by Alice's calls.
        drop(budgets.call(bob).await.unwrap());
        // Alice's third call waits until one of her places is given back.
        let third = tokio::spawn({
            let budgets = budgets.clone();
            async move { budgets.call(alice).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        drop(first);
        assert!(third.await.unwrap().is_ok());
        // Bob's entry is gone; Alice's stays while a place is held.
        assert_eq!(budgets.in_flight.users.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_users_places_is_refused_after_the_wait() {
        let budgets = Budgets::new(limits(1, 600));
        let user = Uuid::now_v7();
        let _held = budgets.call(user).await.unwrap();
        let refused = budgets.call(user).await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn writes_past_the_burst_are_refused_with_a_retry_time() {
        let budgets = Budgets::new(limits(4, 60));
        let user = Uuid::now_v7();
        for _ in 0..10 {
            budgets.write(user).expect("within the burst");
        }
        let refused = budgets.write(user).expect_err("past the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            budgets.write(Uuid::now_v7()).is_ok(),
            "another user's bucket is full"
        );
    }
}
