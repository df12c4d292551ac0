//! The PostgreSQL [`TaskStore`], and the change listener that feeds
//! `WatchTasks` across replicas.
//!
//! Writes lock the task row (`SELECT ... FOR UPDATE`) and then write with
//! the owner and the expected version in the `WHERE` of the same statement,
//! so two writers holding the same etag cannot both win. Each write also
//! runs `pg_notify` inside its transaction: PostgreSQL delivers the notice
//! only if the transaction commits, and in commit order, to the listener of
//! every replica (this one included).
//!
//! The notice carries the whole task as JSON when it fits PostgreSQL's
//! 8000-byte payload limit, which is almost always: a listener can then
//! forward it without a query, and the event shows the task exactly as that
//! write left it. Only a task with a very long description is sent as its
//! id, and the listener re-reads it (skipping it if it is already gone; its
//! delete event follows).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serving::CancellationToken;
use sqlx::{
    PgConnection, PgPool, Postgres, QueryBuilder, Row, postgres::PgListener, postgres::PgRow,
};
use todo_proto::tasks::v1 as proto;
use uuid::Uuid;

use super::{Completion, Created, Page, TaskStore, Written, apply_patch, with_completion};
use crate::{
    domain::{
        Cursor, Etag, ListQuery, NO_DUE_TIME, NewTask, OrderBy, SortKey, Task, TaskPatch, fold_case,
    },
    error::{Error, Result},
    events::{EventKind, Hub, event},
};

/// The channel every replica listens on.
const CHANNEL: &str = "tasks_events";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD_BYTES: usize = 7900;

const COLUMNS: &str = "id, owner, title, description, completed, priority, due_time, \
                       create_time, update_time, complete_time, version";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn task_from_row(row: &PgRow) -> Result<Task> {
    Ok(Task {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        completed: row.try_get("completed")?,
        priority: i32::from(row.try_get::<i16, _>("priority")?),
        due_time: row.try_get("due_time")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        complete_time: row.try_get("complete_time")?,
        version: row.try_get("version")?,
    })
}

/// Priorities are enum values 0..=3, so they always fit a `smallint`.
fn priority(value: i32) -> i16 {
    i16::try_from(value).unwrap_or(i16::MAX)
}

async fn select_task(
    conn: &mut PgConnection,
    owner: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<Task>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND owner = $2{lock}"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(task_from_row).transpose()
}

async fn write_task(conn: &mut PgConnection, next: &Task, expected_version: i64) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE tasks SET title = $1, description = $2, search_title = $3, search_description = $4, \
         completed = $5, priority = $6, due_time = $7, update_time = $8, complete_time = $9, version = $10 \
         WHERE id = $11 AND owner = $12 AND version = $13",
    )
    .bind(&next.title)
    .bind(&next.description)
    .bind(fold_case(&next.title))
    .bind(fold_case(&next.description))
    .bind(next.completed)
    .bind(priority(next.priority))
    .bind(next.due_time)
    .bind(next.update_time)
    .bind(next.complete_time)
    .bind(next.version)
    .bind(next.id)
    .bind(next.owner)
    .bind(expected_version)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
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
async fn notify(
    conn: &mut PgConnection,
    kind: EventKind,
    task: &Task,
    time: DateTime<Utc>,
) -> Result<()> {
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
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

fn sort_expression(order: OrderBy) -> &'static str {
    match order {
        OrderBy::CreateTimeDesc | OrderBy::CreateTime => "create_time",
        OrderBy::DueTime => "COALESCE(due_time, 'infinity'::timestamptz)",
        OrderBy::PriorityDesc => "priority",
        OrderBy::Title => "(title COLLATE \"C\")",
    }
}

fn push_filters(builder: &mut QueryBuilder<'_, Postgres>, owner: Uuid, query: &ListQuery) {
    builder.push(" WHERE owner = ").push_bind(owner);
    if let Some(completed) = query.completed {
        builder.push(" AND completed = ").push_bind(completed);
    }
    if let Some(search) = &query.search {
        let pattern = search.like_pattern();
        builder
            .push(" AND (search_title LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR search_description LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
}

fn cursor_time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Internal("page cursor time out of range".into()))
}

/// Binds the cursor's sort key with the SQL type of the order's expression.
fn push_cursor_key(
    builder: &mut QueryBuilder<'_, Postgres>,
    order: OrderBy,
    key: &SortKey,
) -> Result<()> {
    match (order, key) {
        (OrderBy::CreateTimeDesc | OrderBy::CreateTime, SortKey::Int(micros)) => {
            builder.push_bind(cursor_time(*micros)?);
        }
        (OrderBy::DueTime, SortKey::Int(micros)) => {
            if *micros == NO_DUE_TIME {
                builder.push("'infinity'::timestamptz");
            } else {
                builder.push_bind(cursor_time(*micros)?);
            }
        }
        (OrderBy::PriorityDesc, SortKey::Int(value)) => {
            builder.push_bind(
                i16::try_from(*value)
                    .map_err(|_| Error::Internal("page cursor priority".into()))?,
            );
        }
        (OrderBy::Title, SortKey::Text(title)) => {
            builder.push_bind(title.clone()).push(" COLLATE \"C\"");
        }
        _ => {
            return Err(Error::Internal(
                "a signed page cursor does not fit its order".into(),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl TaskStore for PgStore {
    async fn create(&self, owner: Uuid, task: NewTask, now: DateTime<Utc>) -> Result<Created> {
        let mut tx = self.pool.begin().await?;
        let id = Uuid::now_v7();
        let inserted = sqlx::query(&format!(
            "INSERT INTO tasks (id, owner, title, description, search_title, search_description, \
             completed, priority, due_time, create_time, update_time, complete_time, version, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $9, NULL, 1, $10) \
             ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING \
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(owner)
        .bind(&task.title)
        .bind(&task.description)
        .bind(fold_case(&task.title))
        .bind(fold_case(&task.description))
        .bind(priority(task.priority))
        .bind(task.due_time)
        .bind(now)
        .bind(task.request_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (task, new) = match inserted {
            Some(row) => {
                let created = task_from_row(&row)?;
                notify(&mut tx, EventKind::Created, &created, now).await?;
                (created, true)
            }
            None => {
                // A concurrent or earlier call with this request_id won; the
                // conflict waited for it to commit, so its row is visible.
                let row = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM tasks WHERE owner = $1 AND request_id = $2"
                ))
                .bind(owner)
                .bind(task.request_id)
                .fetch_one(&mut *tx)
                .await?;
                (task_from_row(&row)?, false)
            }
        };
        tx.commit().await?;
        Ok(Created { task, new })
    }

    async fn get(&self, owner: Uuid, id: Uuid) -> Result<Option<Task>> {
        let mut conn = self.pool.acquire().await?;
        select_task(&mut conn, owner, id, false).await
    }

    async fn list(
        &self,
        owner: Uuid,
        query: &ListQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let expression = sort_expression(query.order);
        let (direction, comparison) = if query.order.descending() {
            ("DESC", "<")
        } else {
            ("ASC", ">")
        };

        let mut select = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM tasks"));
        push_filters(&mut select, owner, query);
        if let Some(cursor) = after {
            select.push(format!(" AND ({expression}, id) {comparison} ("));
            push_cursor_key(&mut select, query.order, &cursor.key)?;
            select.push(", ").push_bind(cursor.id).push(")");
        }
        select.push(format!(
            " ORDER BY {expression} {direction}, id {direction} LIMIT "
        ));
        select.push_bind(limit as i64 + 1);

        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM tasks");
        push_filters(&mut count, owner, query);

        // One snapshot for the page and the total.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rows = select.build().fetch_all(&mut *tx).await?;
        let total: i64 = count.build().fetch_one(&mut *tx).await?.try_get(0)?;
        tx.commit().await?;

        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(tasks, limit, total))
    }

    async fn update(
        &self,
        owner: Uuid,
        id: Uuid,
        patch: &TaskPatch,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<Task>> {
        let mut tx = self.pool.begin().await?;
        let Some(current) = select_task(&mut tx, owner, id, true).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let next = apply_patch(&current, patch, now);
        if !write_task(&mut tx, &next, expected).await? {
            return Ok(Written::EtagMismatch);
        }
        notify(&mut tx, EventKind::Updated, &next, now).await?;
        tx.commit().await?;
        Ok(Written::Done(next))
    }

    async fn delete(
        &self,
        owner: Uuid,
        id: Uuid,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<()>> {
        let mut tx = self.pool.begin().await?;
        let Some(current) = select_task(&mut tx, owner, id, true).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let deleted =
            sqlx::query("DELETE FROM tasks WHERE id = $1 AND owner = $2 AND version = $3")
                .bind(id)
                .bind(owner)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if !deleted {
            return Ok(Written::EtagMismatch);
        }
        notify(&mut tx, EventKind::Deleted, &current, now).await?;
        tx.commit().await?;
        Ok(Written::Done(()))
    }

    async fn set_completed(
        &self,
        owner: Uuid,
        id: Uuid,
        completed: bool,
        now: DateTime<Utc>,
    ) -> Result<Completion> {
        let mut tx = self.pool.begin().await?;
        let Some(current) = select_task(&mut tx, owner, id, true).await? else {
            return Ok(Completion::NotFound);
        };
        if current.completed == completed {
            return Ok(Completion::Unchanged(current));
        }
        let next = with_completion(&current, completed, now);
        if !write_task(&mut tx, &next, current.version).await? {
            return Err(Error::Internal("a row locked FOR UPDATE changed".into()));
        }
        notify(&mut tx, EventKind::Updated, &next, now).await?;
        tx.commit().await?;
        Ok(Completion::Changed(next))
    }

    async fn page_token_secret(&self) -> Result<Vec<u8>> {
        let candidate: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO service_secrets (name, value) VALUES ('page_token', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(candidate.to_vec())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM service_secrets WHERE name = 'page_token'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Listens for the changes of every replica and publishes them to `hub`
/// until `shutdown`. While the listener is not connected the hub is marked
/// unavailable: open watchers end with `UNAVAILABLE` (they may have missed
/// changes) and new ones are refused until it is back.
pub async fn listen(pool: PgPool, hub: Arc<Hub>, shutdown: CancellationToken) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
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
                            dispatch(&pool, &hub, notification.payload()).await
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

async fn dispatch(pool: &PgPool, hub: &Hub, payload: &str) {
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
        (None, _) => {
            let read = async {
                let mut conn = pool.acquire().await?;
                select_task(&mut conn, notice.owner, notice.id, false).await
            };
            match read.await {
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
            }
        }
    };
    hub.publish(notice.owner, event(notice.kind, &task, notice.time));
}
