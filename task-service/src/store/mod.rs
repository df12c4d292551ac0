//! Where tasks live: one [`TaskStore`] trait with the operations the service
//! needs, and one implementation per database ([`sqlite`], [`postgres`]).
//!
//! Two rules hold in both implementations:
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
//!   The new field values are computed once, in Rust (`apply_patch`), so
//!   both databases follow the same rules.
//!
//! Each committed change is published as an event for `WatchTasks`
//! (see [`crate::events`]): SQLite hands it to the in-process hub after the
//! commit, PostgreSQL sends it with `pg_notify` inside the transaction, so a
//! rolled-back write notifies nobody.
//!
//! Times are stored to the microsecond (SQLite: INTEGER microseconds since
//! the epoch; PostgreSQL: `timestamptz`). Lists use keyset pagination over
//! indexes that start with the owner, so every page costs the same.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use serving::database::{Database, Migrations};
use sqlx::migrate::Migrator;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{Cursor, Etag, ListQuery, NewTask, Task, TaskPatch},
    error::Result,
    events::Hub,
};

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
    /// Whether more tasks follow the last one.
    pub more: bool,
    /// All tasks matching the filters.
    pub total: i64,
}

impl Page {
    /// The page from rows fetched with one extra beyond `limit`: that extra
    /// row only says that more follow.
    pub fn from_rows(mut tasks: Vec<Task>, limit: usize, total: i64) -> Self {
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        Self { tasks, more, total }
    }
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Creates a task, or returns the one an earlier call with the same
    /// `(owner, request_id)` created.
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

    /// The page-token MAC key shared by every replica, created on first use.
    async fn page_token_secret(&self) -> Result<Vec<u8>>;

    /// Whether the database answers right now (for health).
    async fn ping(&self) -> bool;
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The schema of the tasks database, applied by [`Database::open`].
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE_MIGRATIONS,
    postgres: &POSTGRES_MIGRATIONS,
};

/// The store of a database opened with [`MIGRATIONS`]. A SQLite store
/// publishes its changes to `hub`; a PostgreSQL hub is fed by
/// [`postgres::listen`] instead.
pub fn open(database: Database, hub: Arc<Hub>) -> Arc<dyn TaskStore> {
    match database {
        Database::Sqlite { reader, writer } => {
            Arc::new(sqlite::SqliteStore::new(reader, writer, hub))
        }
        Database::Postgres(pool) => Arc::new(postgres::PgStore::new(pool)),
    }
}

/// The fields a task has after `patch` is applied at `now`: the same rules
/// for both databases, computed in Rust so the SQL stays a plain
/// conditional `UPDATE`.
pub(crate) fn apply_patch(current: &Task, patch: &TaskPatch, now: DateTime<Utc>) -> Task {
    let mut next = current.clone();
    if let Some(title) = &patch.title {
        next.title = title.clone();
    }
    if let Some(description) = &patch.description {
        next.description = description.clone();
    }
    if let Some(priority) = patch.priority {
        next.priority = priority;
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
