//! The SQLite [`TaskStore`]: the embedded default, one process.
//!
//! Writes go through the single-connection writer pool and open with
//! `BEGIN IMMEDIATE`, so they queue for the write lock up front instead of
//! failing half-way with "database is locked". The event of a write is
//! handed to the in-process [`Hub`] after the commit but while the writer
//! connection is still held, so events leave in exactly commit order.
//! Reads use the reader pool and never wait for writers (WAL).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool, sqlite::SqliteRow,
};
use uuid::Uuid;

use super::{Completion, Created, Page, TaskStore, Written, apply_patch, with_completion};
use crate::{
    domain::{Cursor, Etag, ListQuery, NewTask, OrderBy, SortKey, Task, TaskPatch, fold_case},
    error::{Error, Result},
    events::{EventKind, Hub, task_event},
};

const COLUMNS: &str = "id, owner, title, description, completed, priority, due_time, \
                       create_time, update_time, complete_time, version";

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    hub: Arc<Hub>,
}

impl SqliteStore {
    pub fn new(reader: SqlitePool, writer: SqlitePool, hub: Arc<Hub>) -> Self {
        Self {
            reader,
            writer,
            hub,
        }
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::Internal(format!("stored time {micros} out of range")))
}

fn task_from_row(row: &SqliteRow) -> Result<Task> {
    let uuid = |column: &str| -> Result<Uuid> {
        let text: String = row.try_get(column)?;
        Uuid::try_parse(&text)
            .map_err(|_| Error::Internal(format!("stored {column} is not a UUID")))
    };
    Ok(Task {
        id: uuid("id")?,
        owner: uuid("owner")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        completed: row.try_get("completed")?,
        priority: row.try_get("priority")?,
        due_time: row
            .try_get::<Option<i64>, _>("due_time")?
            .map(time)
            .transpose()?,
        create_time: time(row.try_get("create_time")?)?,
        update_time: time(row.try_get("update_time")?)?,
        complete_time: row
            .try_get::<Option<i64>, _>("complete_time")?
            .map(time)
            .transpose()?,
        version: row.try_get("version")?,
    })
}

async fn select_task(conn: &mut SqliteConnection, owner: Uuid, id: Uuid) -> Result<Option<Task>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE id = ? AND owner = ?"
    ))
    .bind(id.to_string())
    .bind(owner.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(task_from_row).transpose()
}

/// Writes every mutable field of `next`, only if the row still has
/// `expected_version`: the ownership and etag check are in this statement.
async fn write_task(
    conn: &mut SqliteConnection,
    next: &Task,
    expected_version: i64,
) -> Result<bool> {
    let result = sqlx::query(
        "UPDATE tasks SET title = ?, description = ?, search_title = ?, search_description = ?, \
         completed = ?, priority = ?, due_time = ?, update_time = ?, complete_time = ?, version = ? \
         WHERE id = ? AND owner = ? AND version = ?",
    )
    .bind(&next.title)
    .bind(&next.description)
    .bind(fold_case(&next.title))
    .bind(fold_case(&next.description))
    .bind(next.completed)
    .bind(next.priority)
    .bind(next.due_time.map(micros))
    .bind(micros(next.update_time))
    .bind(next.complete_time.map(micros))
    .bind(next.version)
    .bind(next.id.to_string())
    .bind(next.owner.to_string())
    .bind(expected_version)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The SQL expression a list is ordered by (identical to the index's).
fn sort_expression(order: OrderBy) -> &'static str {
    match order {
        OrderBy::CreateTimeDesc | OrderBy::CreateTime => "create_time",
        OrderBy::DueTime => "due_sort",
        OrderBy::PriorityDesc => "priority",
        OrderBy::Title => "title",
    }
}

fn push_filters(builder: &mut QueryBuilder<'_, Sqlite>, owner: Uuid, query: &ListQuery) {
    builder.push(" WHERE owner = ").push_bind(owner.to_string());
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

#[async_trait]
impl TaskStore for SqliteStore {
    async fn create(&self, owner: Uuid, task: NewTask, now: DateTime<Utc>) -> Result<Created> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO tasks (id, owner, title, description, search_title, search_description, \
             completed, priority, due_time, create_time, update_time, complete_time, version, request_id) \
             VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, NULL, 1, ?) \
             ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(&task.title)
        .bind(&task.description)
        .bind(fold_case(&task.title))
        .bind(fold_case(&task.description))
        .bind(task.priority)
        .bind(task.due_time.map(micros))
        .bind(micros(now))
        .bind(micros(now))
        .bind(task.request_id.map(|id| id.to_string()))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let created = if inserted {
            select_task(&mut tx, owner, id).await?
        } else {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM tasks WHERE owner = ? AND request_id = ?"
            ))
            .bind(owner.to_string())
            .bind(task.request_id.map(|id| id.to_string()))
            .fetch_optional(&mut *tx)
            .await?;
            row.as_ref().map(task_from_row).transpose()?
        };
        let task =
            created.ok_or_else(|| Error::Internal("a created task cannot be read back".into()))?;
        tx.commit().await?;
        if inserted {
            self.hub
                .publish(owner, task_event(EventKind::Created, &task, now));
        }
        drop(conn);
        Ok(Created {
            task,
            new: inserted,
        })
    }

    async fn get(&self, owner: Uuid, id: Uuid) -> Result<Option<Task>> {
        let mut conn = self.reader.acquire().await?;
        select_task(&mut conn, owner, id).await
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

        let mut select = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM tasks"));
        push_filters(&mut select, owner, query);
        if let Some(cursor) = after {
            select.push(format!(" AND ({expression}, id) {comparison} ("));
            match &cursor.key {
                SortKey::Int(value) => select.push_bind(*value),
                SortKey::Text(value) => select.push_bind(value.clone()),
            };
            select.push(", ").push_bind(cursor.id.to_string()).push(")");
        }
        select.push(format!(
            " ORDER BY {expression} {direction}, id {direction} LIMIT "
        ));
        select.push_bind(limit as i64 + 1);

        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM tasks");
        push_filters(&mut count, owner, query);

        // One read transaction: the page and the total see the same snapshot.
        let mut conn = self.reader.acquire().await?;
        let mut tx = conn.begin().await?;
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
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let Some(current) = select_task(&mut tx, owner, id).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let next = apply_patch(&current, patch, now);
        if !write_task(&mut tx, &next, expected).await? {
            return Ok(Written::EtagMismatch);
        }
        tx.commit().await?;
        self.hub
            .publish(owner, task_event(EventKind::Updated, &next, now));
        drop(conn);
        Ok(Written::Done(next))
    }

    async fn delete(
        &self,
        owner: Uuid,
        id: Uuid,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<()>> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let Some(current) = select_task(&mut tx, owner, id).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let deleted = sqlx::query("DELETE FROM tasks WHERE id = ? AND owner = ? AND version = ?")
            .bind(id.to_string())
            .bind(owner.to_string())
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !deleted {
            return Ok(Written::EtagMismatch);
        }
        tx.commit().await?;
        self.hub
            .publish(owner, task_event(EventKind::Deleted, &current, now));
        drop(conn);
        Ok(Written::Done(()))
    }

    async fn set_completed(
        &self,
        owner: Uuid,
        id: Uuid,
        completed: bool,
        now: DateTime<Utc>,
    ) -> Result<Completion> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let Some(current) = select_task(&mut tx, owner, id).await? else {
            return Ok(Completion::NotFound);
        };
        if current.completed == completed {
            return Ok(Completion::Unchanged(current));
        }
        let next = with_completion(&current, completed, now);
        if !write_task(&mut tx, &next, current.version).await? {
            return Err(Error::Internal(
                "a row locked by BEGIN IMMEDIATE changed".into(),
            ));
        }
        tx.commit().await?;
        self.hub
            .publish(owner, task_event(EventKind::Updated, &next, now));
        drop(conn);
        Ok(Completion::Changed(next))
    }

    async fn page_token_secret(&self) -> Result<Vec<u8>> {
        let candidate: [u8; 32] = rand::random();
        sqlx::query("INSERT INTO service_secrets (name, value) VALUES ('page_token', ?) ON CONFLICT (name) DO NOTHING")
            .bind(candidate.to_vec())
            .execute(&self.writer)
            .await?;
        let row = sqlx::query("SELECT value FROM service_secrets WHERE name = 'page_token'")
            .fetch_one(&self.writer)
            .await?;
        Ok(row.try_get("value")?)
    }

    async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }
}
