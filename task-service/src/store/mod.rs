//! Where tasks live: one [`TaskStore`] trait with the operations the service
//! needs, implemented once ([`sql::SqlStore`]) for both SQLite and
//! PostgreSQL: each operation is one SQL text, and `serving::sql` binds it
//! to whichever database runs.
//!
//! Rules every operation keeps:
//!
//! - **Every operation takes the owner.** There is no way to read or write a
//!   task by id alone; a foreign id behaves exactly like an unknown one.
//! - **Conditions live in the writing statement.** A write runs in one
//!   transaction: it reads the caller's row while holding the write lock
//!   (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE`), which
//!   tells `NOT_FOUND` from the rest, then writes with the owner and the
//!   expected version (the etag) in the `WHERE` of the one `UPDATE`/`DELETE`.
//!   A stale etag matches no row and is `ABORTED`; two writers holding the
//!   same etag cannot both win, and no writer loses another's change.
//!   The new field values are computed once, in Rust (`apply_patch`).
//! - **Counts are exact and cost no scan.** Each owner's number of tasks and
//!   of completed tasks is kept in `task_counts`, changed in the transaction
//!   of every write: `ListTasks`' `total_size` reads it, and `CreateTask`
//!   refuses past the per-user quota on that locked row.
//! - **Every read is bounded.** A page reads at most `page_size + 1` rows
//!   through an index that starts with the owner. A `query` (substring
//!   search) examines at most [`SEARCH_WINDOW`] of the owner's tasks per
//!   call, matching in Rust in linear time, so no crafted title or query can
//!   make one call expensive; the page may then be short (or empty) with a
//!   next page token that continues where the search stopped (AIP-158).
//!
//! Each committed change is published as an event for `WatchTasks` (see
//! [`crate::events::Feed`]).

pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretBox;
use serving::{migration, migrations::Migrations};
use uuid::Uuid;

use crate::{
    domain::{Cursor, Etag, ListQuery, NewTask, Task, TaskPatch},
    error::Result,
};

/// The schema of the tasks database, applied by
/// [`serving::database::Database::open`].
///
/// A new migration is a file in both folders and a line in each list here;
/// `every_migration_file_is_compiled_in` fails until both are done.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        migration!("migrations/sqlite", "20261125000001_tasks.sql"),
        migration!(
            "migrations/sqlite",
            "20261201000001_one_sql_text_and_counts.sql"
        ),
        migration!("migrations/sqlite", "20261201000002_account_deletions.sql"),
    ],
    postgres: &[
        migration!("migrations/postgres", "20261125000001_tasks.sql"),
        migration!(
            "migrations/postgres",
            "20261201000001_one_sql_text_and_counts.sql"
        ),
        migration!(
            "migrations/postgres",
            "20261201000002_account_deletions.sql"
        ),
    ],
};

/// Most of the owner's tasks one `ListTasks` with a `query` examines.
pub const SEARCH_WINDOW: usize = 1000;

/// What a `CreateTask` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub task: Task,
    /// False when an earlier call with the same `request_id` made it.
    pub new: bool,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T> {
    Done(T),
    NotFound,
    EtagMismatch,
}

/// What a `SetTaskCompleted` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Changed(Task),
    /// It already had the asked-for state: nothing was written.
    Unchanged(Task),
    NotFound,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub tasks: Vec<Task>,
    /// Where the next page starts, when there may be more.
    pub next: Option<Cursor>,
    /// All tasks matching the filters: exact without a `query`; with one,
    /// exact when the owner's tasks fit one search window, else estimated
    /// from the window searched.
    pub total: i64,
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Creates a task, or returns the one an earlier call with the same
    /// `(owner, request_id)` created. [`crate::error::Error::QuotaExceeded`]
    /// when the owner already has the most tasks allowed.
    async fn create(&self, owner: Uuid, task: NewTask, now: DateTime<Utc>) -> Result<Created>;

    async fn get(&self, owner: Uuid, id: Uuid) -> Result<Option<Task>>;

    /// Up to `limit` tasks after `after` in the query's order.
    async fn list(
        &self,
        owner: Uuid,
        query: &ListQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page>;

    async fn update(
        &self,
        owner: Uuid,
        id: Uuid,
        patch: &TaskPatch,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<Task>>;

    async fn delete(
        &self,
        owner: Uuid,
        id: Uuid,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<()>>;

    async fn set_completed(
        &self,
        owner: Uuid,
        id: Uuid,
        completed: bool,
        now: DateTime<Utc>,
    ) -> Result<Completion>;

    /// Remembers that `owner`'s account was deleted at `time` (idempotent):
    /// their tasks are to go, and any written by a token still valid until
    /// `tokens_expire` too.
    async fn record_account_deletion(
        &self,
        owner: Uuid,
        time: DateTime<Utc>,
        tokens_expire: DateTime<Utc>,
    ) -> Result<()>;

    /// The deleted accounts whose tasks are not all gone yet, with the time
    /// after which no token of theirs can write.
    async fn pending_account_deletions(&self) -> Result<Vec<(Uuid, DateTime<Utc>)>>;

    /// Deletes up to `limit` of `owner`'s tasks; how many it deleted.
    async fn delete_tasks_of(&self, owner: Uuid, limit: usize) -> Result<u64>;

    /// Marks `owner`'s deletion done: their tasks and counts are gone.
    async fn finish_account_deletion(&self, owner: Uuid, now: DateTime<Utc>) -> Result<()>;

    /// The page-token key shared by every replica, created on first use.
    async fn page_token_secret(&self) -> Result<SecretBox<[u8]>>;

    /// Whether the database answers right now (for health).
    async fn ping(&self) -> bool;
}

/// The fields a task has after `patch` is applied at `now`: the same rules
/// for both databases, computed in Rust so the SQL stays a plain
/// conditional `UPDATE`.
pub(crate) fn apply_patch(current: &Task, patch: &TaskPatch, now: DateTime<Utc>) -> Task {
    let mut next = current.clone();
    if let Some(title) = &patch.title {
        next.title = title.as_str().to_owned();
    }
    if let Some(description) = &patch.description {
        next.description = description.as_str().to_owned();
    }
    if let Some(priority) = patch.priority {
        next.priority = priority as i32;
    }
    if let Some(due_time) = patch.due_time {
        next.due_time = due_time;
    }
    if let Some(completed) = patch.completed {
        set_completion(&mut next, completed, now);
    }
    next.update_time = now;
    next.version = current.version + 1;
    next
}

/// The task after `SetTaskCompleted` at `now`: an update of the completion
/// alone, by the same rules.
pub(crate) fn with_completion(current: &Task, completed: bool, now: DateTime<Utc>) -> Task {
    let patch = TaskPatch {
        completed: Some(completed),
        ..TaskPatch::default()
    };
    apply_patch(current, &patch, now)
}

/// Sets the completion state; `complete_time` is kept while it stays
/// completed and cleared when it is reopened.
fn set_completion(task: &mut Task, completed: bool, now: DateTime<Utc>) {
    if completed && !task.completed {
        task.complete_time = Some(now);
    } else if !completed {
        task.complete_time = None;
    }
    task.completed = completed;
}

/// A shared handle to the store.
pub type Store = Arc<dyn TaskStore>;

#[cfg(test)]
mod migrations_tests {
    #[test]
    fn every_migration_file_is_compiled_in() {
        super::MIGRATIONS
            .assert_embed(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"));
    }
}
