//! [`TaskStore`] on SQLite or PostgreSQL: each operation written once.
//!
//! Times are stored to the microsecond (SQLite: INTEGER microseconds since
//! the epoch; PostgreSQL: `timestamptz`), ids are UUIDv7 (TEXT / `uuid`);
//! `serving::sql` does the binding. The list orders are plain columns with
//! an index each that starts with the owner and ends with the id, so a
//! keyset page is one index range scan wherever it starts:
//! `create_time`, `due_key` (due time in microseconds, none last),
//! `priority`, and `title` (by code point on both databases).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use memchr::memmem;
use secrecy::SecretBox;
use serving::sql::{Db, Executor, Row, Tx, statement};
use uuid::Uuid;

use super::{
    Completion, Created, Page, SEARCH_WINDOW, TaskStore, Written, apply_patch, with_completion,
};
use crate::{
    domain::{
        Cursor, Etag, ListQuery, NewTask, OrderBy, SearchText, SortKey, Task, TaskPatch,
        due_sort_key, fold_case,
    },
    error::{Error, Result},
    events::{EventKind, Feed},
};

/// A task's columns, in the order [`task_at`] reads them.
const COLUMNS: &str = "id, owner, title, description, completed, priority, due_time, \
                       create_time, update_time, complete_time, version";

/// Every order's column, and its direction.
fn order_column(order: OrderBy) -> &'static str {
    match order {
        OrderBy::CreateTimeDesc | OrderBy::CreateTime => "create_time",
        OrderBy::DueTime => "due_key",
        OrderBy::PriorityDesc => "priority",
        OrderBy::Title => "title",
    }
}

pub struct SqlStore {
    db: Db,
    feed: Feed,
    max_tasks_per_user: i64,
}

impl SqlStore {
    pub fn new(db: Db, feed: Feed, max_tasks_per_user: u32) -> Self {
        Self {
            db,
            feed,
            max_tasks_per_user: i64::from(max_tasks_per_user),
        }
    }
}

fn task_from_row(row: &Row) -> Result<Task> {
    task_at(row, 0)
}

/// The task whose [`COLUMNS`] start at position `first` of `row`, read by
/// position: a page reads eleven columns of up to a hundred rows, and a
/// lookup by name would search the column names for each of them.
fn task_at(row: &Row, first: usize) -> Result<Task> {
    Ok(Task {
        id: row.uuid(first)?,
        owner: row.uuid(first + 1)?,
        title: row.text(first + 2)?,
        description: row.text(first + 3)?,
        completed: row.bool(first + 4)?,
        priority: i32::from(row.small_int(first + 5)?),
        due_time: row.opt_time(first + 6)?,
        create_time: row.time(first + 7)?,
        update_time: row.time(first + 8)?,
        complete_time: row.opt_time(first + 9)?,
        version: row.big_int(first + 10)?,
    })
}

/// Priorities are enum values 0..=3, so they always fit a `smallint`.
fn priority(value: i32) -> i16 {
    i16::try_from(value).unwrap_or(i16::MAX)
}

/// The owner's task `id`, locked for the rest of `tx` when it writes.
async fn select_for_update(tx: &mut Tx, owner: Uuid, id: Uuid) -> Result<Option<Task>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND owner = $2{}",
        tx.for_update()
    );
    statement(sql)
        .uuid(id)
        .uuid(owner)
        .fetch_optional(tx)
        .await?
        .as_ref()
        .map(task_from_row)
        .transpose()
}

/// Writes every mutable field of `next`, only if the row still has
/// `expected_version`: the ownership and etag check are in this statement.
async fn write_task(tx: &mut Tx, next: &Task, expected_version: i64) -> Result<bool> {
    let changed = statement(
        "UPDATE tasks SET title = $1, description = $2, search_title = $3, \
         search_description = $4, completed = $5, priority = $6, due_time = $7, due_key = $8, \
         update_time = $9, complete_time = $10, version = $11 \
         WHERE id = $12 AND owner = $13 AND version = $14",
    )
    .text(&next.title)
    .text(&next.description)
    .text(fold_case(&next.title))
    .text(fold_case(&next.description))
    .bool(next.completed)
    .small_int(priority(next.priority))
    .opt_time(next.due_time)
    .big_int(due_sort_key(next.due_time))
    .time(next.update_time)
    .opt_time(next.complete_time)
    .big_int(next.version)
    .uuid(next.id)
    .uuid(next.owner)
    .big_int(expected_version)
    .execute(tx)
    .await?;
    Ok(changed == 1)
}

/// Moves the owner's counts by `total` tasks and `completed` completed ones.
async fn count(tx: &mut Tx, owner: Uuid, total: i64, completed: i64) -> Result<()> {
    if total == 0 && completed == 0 {
        return Ok(());
    }
    statement(
        "UPDATE task_counts SET total = total + $2, completed = completed + $3 WHERE owner = $1",
    )
    .uuid(owner)
    .big_int(total)
    .big_int(completed)
    .execute(tx)
    .await?;
    Ok(())
}

/// How a task's completion moved the completed count.
fn completed_delta(before: bool, after: bool) -> i64 {
    i64::from(after) - i64::from(before)
}

/// The owner's `(total, completed)` counts.
async fn counts(on: &mut impl Executor, owner: Uuid) -> Result<(i64, i64)> {
    let row = statement("SELECT total, completed FROM task_counts WHERE owner = $1")
        .uuid(owner)
        .fetch_optional(on)
        .await?;
    match row {
        Some(row) => Ok((row.big_int("total")?, row.big_int("completed")?)),
        None => Ok((0, 0)),
    }
}

/// The owner's tasks after `after` under `query`'s filter and order, at
/// most `limit` rows of `columns`.
fn list_statement(
    columns: &str,
    owner: Uuid,
    query: &ListQuery,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<serving::sql::Statement<'static>> {
    let column = order_column(query.order);
    let (direction, comparison) = if query.order.descending() {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    let mut sql = format!("SELECT {columns} FROM tasks WHERE owner = $1");
    let mut next = 2;
    if query.completed.is_some() {
        sql.push_str(&format!(" AND completed = ${next}"));
        next += 1;
    }
    if after.is_some() {
        sql.push_str(&format!(
            " AND ({column}, id) {comparison} (${next}, ${})",
            next + 1
        ));
        next += 2;
    }
    sql.push_str(&format!(
        " ORDER BY {column} {direction}, id {direction} LIMIT ${next}"
    ));
    // Bound in the order of the placeholders.
    let mut statement = statement(sql).uuid(owner);
    if let Some(completed) = query.completed {
        statement = statement.bool(completed);
    }
    if let Some(cursor) = after {
        statement = match (query.order, &cursor.key) {
            (OrderBy::CreateTimeDesc | OrderBy::CreateTime, SortKey::Int(micros)) => statement
                .time(DateTime::from_timestamp_micros(*micros).ok_or_else(|| {
                    Error::Internal("a signed page cursor holds a time out of range".into())
                })?),
            (OrderBy::DueTime, SortKey::Int(key)) => statement.big_int(*key),
            (OrderBy::PriorityDesc, SortKey::Int(value)) => {
                statement.small_int(i16::try_from(*value).map_err(|_| {
                    Error::Internal("a signed page cursor holds a priority out of range".into())
                })?)
            }
            (OrderBy::Title, SortKey::Text(title)) => statement.text(title.clone()),
            _ => {
                return Err(Error::Internal(
                    "a signed page cursor does not fit its order".into(),
                ));
            }
        }
        .uuid(cursor.id);
    }
    Ok(statement.big_int(i64::try_from(limit).unwrap_or(i64::MAX)))
}

/// Of `total` and `completed`, the count under the `completed` filter.
fn in_filter(completed_filter: Option<bool>, total: i64, completed: i64) -> i64 {
    match completed_filter {
        None => total,
        Some(true) => completed,
        Some(false) => total - completed,
    }
}

/// Whether `search` occurs in the row's folded title or description.
fn matches(search: &memmem::Finder<'_>, row: &Row) -> Result<bool> {
    Ok(search.find(row.text("search_title")?.as_bytes()).is_some()
        || search
            .find(row.text("search_description")?.as_bytes())
            .is_some())
}

/// A page of a list without search: the owner's counts row joined to at
/// most `limit` rows of the page (none or more). An owner without a counts
/// row has never had a task, and gets no row at all: counts of zero and an
/// empty page.
///
/// One statement is one snapshot on both databases, without a transaction
/// around it: the page and the count agree. It replaced a snapshot
/// transaction of two queries, four round trips that held ListTasks to a
/// quarter of the page query's rate (BENCHMARKS.md). Reading the counts row
/// as it is, rather than through an aggregate that makes a row even when
/// there is none, ran the statement ~13% faster in pgbench.
fn page_statement(
    owner: Uuid,
    query: &ListQuery,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<serving::sql::Statement<'static>> {
    let column = order_column(query.order);
    let direction = if query.order.descending() {
        "DESC"
    } else {
        "ASC"
    };
    let columns = format!("{COLUMNS}, {column} AS sort_key");
    Ok(
        list_statement(&columns, owner, query, after, limit)?.wrap(|page| {
            format!(
                "SELECT counts.total AS count_total, counts.completed AS count_completed, page.* \
                 FROM task_counts AS counts LEFT JOIN ({page}) AS page ON TRUE \
                 WHERE counts.owner = $1 \
                 ORDER BY page.sort_key {direction}, page.id {direction}"
            )
        }),
    )
}

impl SqlStore {
    /// A page of a list without `query`: `limit + 1` rows (the extra one
    /// only says more follow), and the exact count, in one statement.
    async fn page(
        &self,
        owner: Uuid,
        query: &ListQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let statement = page_statement(owner, query, after, limit + 1)?;
        let rows = statement.fetch_all(&mut self.db.read().await?).await?;
        // Each row is the two counts, then the task's COLUMNS.
        let (total, completed) = match rows.first() {
            Some(row) => (row.big_int(0)?, row.big_int(1)?),
            // No counts row: the owner has never had a task.
            None => (0, 0),
        };
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of an empty page has the counts and NULL columns.
            if !row.is_null(2)? {
                tasks.push(task_at(row, 2)?);
            }
        }
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        let next = match tasks.last() {
            Some(last) if more => Some(query.order.cursor_of(last)),
            _ => None,
        };
        Ok(Page {
            tasks,
            next,
            total: in_filter(query.completed, total, completed),
        })
    }

    /// A page of a search: one window of at most [`SEARCH_WINDOW`] rows in
    /// the list's order, matched in Rust (see the module doc of
    /// [`super`]). The page ends at its last task when more matches follow
    /// in the window, or after the window when it was full.
    async fn search(
        &self,
        owner: Uuid,
        query: &ListQuery,
        search: &SearchText,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        let columns = format!("{COLUMNS}, search_title, search_description");
        let mut tx = self.db.begin_snapshot().await?;
        let window = list_statement(&columns, owner, query, after, SEARCH_WINDOW)?
            .fetch_all(&mut tx)
            .await?;
        let (total, completed) = counts(&mut tx, owner).await?;
        tx.commit().await?;

        let finder = memmem::Finder::new(search.as_str().as_bytes());
        let mut tasks = Vec::new();
        let mut matched = 0usize;
        for row in &window {
            if matches(&finder, row)? {
                matched += 1;
                if tasks.len() < limit {
                    tasks.push(task_from_row(row)?);
                }
            }
        }
        let window_full = window.len() == SEARCH_WINDOW;
        let next = if matched > limit {
            tasks.last().map(|last| query.order.cursor_of(last))
        } else if window_full {
            let last = window.last().map(task_from_row).transpose()?;
            last.map(|last| query.order.cursor_of(&last))
        } else {
            None
        };
        #[allow(
            clippy::cast_possible_truncation,
            reason = "an estimate of a count, far below i64::MAX"
        )]
        let total = if after.is_none() && !window_full {
            // The whole list was searched: exact.
            i64::try_from(matched).unwrap_or(i64::MAX)
        } else {
            // Extrapolated: the share of the window that matched, of all
            // the owner's tasks under the filter.
            let share = matched as f64 / window.len().max(1) as f64;
            (share * in_filter(query.completed, total, completed) as f64).round() as i64
        };
        Ok(Page { tasks, next, total })
    }
}

#[async_trait]
impl TaskStore for SqlStore {
    async fn create(&self, owner: Uuid, task: NewTask, now: DateTime<Utc>) -> Result<Created> {
        let mut tx = self.db.begin_write().await?;
        // Creates the owner's counts row if needed and locks it: creates of
        // one owner queue here, so the quota check below is exact.
        let row = statement(
            "INSERT INTO task_counts (owner, total, completed) VALUES ($1, 0, 0) \
             ON CONFLICT (owner) DO UPDATE SET total = task_counts.total RETURNING total",
        )
        .uuid(owner)
        .fetch_one(&mut tx)
        .await?;
        let tasks_owned = row.big_int("total")?;
        if let Some(request_id) = task.request_id {
            let earlier = statement(format!(
                "SELECT {COLUMNS} FROM tasks WHERE owner = $1 AND request_id = $2"
            ))
            .uuid(owner)
            .uuid(request_id)
            .fetch_optional(&mut tx)
            .await?;
            if let Some(earlier) = earlier {
                // A retry: the task it created, whatever the quota says now.
                return Ok(Created {
                    task: task_from_row(&earlier)?,
                    new: false,
                });
            }
        }
        if tasks_owned >= self.max_tasks_per_user {
            return Err(Error::QuotaExceeded {
                limit: self.max_tasks_per_user,
            });
        }
        let title = task.title.as_str();
        let description = task.description.as_str();
        let row = statement(format!(
            "INSERT INTO tasks (id, owner, title, description, search_title, search_description, \
             completed, priority, due_time, due_key, create_time, update_time, complete_time, \
             version, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, $9, $10, $10, NULL, 1, $11) \
             RETURNING {COLUMNS}"
        ))
        .uuid(Uuid::now_v7())
        .uuid(owner)
        .text(title)
        .text(description)
        .text(fold_case(title))
        .text(fold_case(description))
        .small_int(task.priority as i16)
        .opt_time(task.due_time)
        .big_int(due_sort_key(task.due_time))
        .time(now)
        .opt_uuid(task.request_id)
        .fetch_one(&mut tx)
        .await?;
        let created = task_from_row(&row)?;
        count(&mut tx, owner, 1, 0).await?;
        self.feed
            .commit(tx, EventKind::Created, &created, now)
            .await?;
        Ok(Created {
            task: created,
            new: true,
        })
    }

    async fn get(&self, owner: Uuid, id: Uuid) -> Result<Option<Task>> {
        let mut conn = self.db.read().await?;
        statement(format!(
            "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND owner = $2"
        ))
        .uuid(id)
        .uuid(owner)
        .fetch_optional(&mut conn)
        .await?
        .as_ref()
        .map(task_from_row)
        .transpose()
    }

    async fn list(
        &self,
        owner: Uuid,
        query: &ListQuery,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page> {
        match &query.search {
            None => self.page(owner, query, after, limit).await,
            Some(search) => self.search(owner, query, search, after, limit).await,
        }
    }

    async fn update(
        &self,
        owner: Uuid,
        id: Uuid,
        patch: &TaskPatch,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<Task>> {
        let mut tx = self.db.begin_write().await?;
        let Some(current) = select_for_update(&mut tx, owner, id).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let next = apply_patch(&current, patch, now);
        if !write_task(&mut tx, &next, expected).await? {
            return Ok(Written::EtagMismatch);
        }
        count(
            &mut tx,
            owner,
            0,
            completed_delta(current.completed, next.completed),
        )
        .await?;
        self.feed.commit(tx, EventKind::Updated, &next, now).await?;
        Ok(Written::Done(next))
    }

    async fn delete(
        &self,
        owner: Uuid,
        id: Uuid,
        etag: Option<Etag>,
        now: DateTime<Utc>,
    ) -> Result<Written<()>> {
        let mut tx = self.db.begin_write().await?;
        let Some(current) = select_for_update(&mut tx, owner, id).await? else {
            return Ok(Written::NotFound);
        };
        let expected = etag.map_or(current.version, Etag::version);
        let deleted = statement("DELETE FROM tasks WHERE id = $1 AND owner = $2 AND version = $3")
            .uuid(id)
            .uuid(owner)
            .big_int(expected)
            .execute(&mut tx)
            .await?
            == 1;
        if !deleted {
            return Ok(Written::EtagMismatch);
        }
        count(&mut tx, owner, -1, -i64::from(current.completed)).await?;
        self.feed
            .commit(tx, EventKind::Deleted, &current, now)
            .await?;
        Ok(Written::Done(()))
    }

    async fn set_completed(
        &self,
        owner: Uuid,
        id: Uuid,
        completed: bool,
        now: DateTime<Utc>,
    ) -> Result<Completion> {
        let mut tx = self.db.begin_write().await?;
        let Some(current) = select_for_update(&mut tx, owner, id).await? else {
            return Ok(Completion::NotFound);
        };
        if current.completed == completed {
            return Ok(Completion::Unchanged(current));
        }
        let next = with_completion(&current, completed, now);
        if !write_task(&mut tx, &next, current.version).await? {
            return Err(Error::Internal(
                "a row locked for this write changed".into(),
            ));
        }
        count(
            &mut tx,
            owner,
            0,
            completed_delta(current.completed, completed),
        )
        .await?;
        self.feed.commit(tx, EventKind::Updated, &next, now).await?;
        Ok(Completion::Changed(next))
    }

    async fn record_account_deletion(
        &self,
        owner: Uuid,
        time: DateTime<Utc>,
        tokens_expire: DateTime<Utc>,
    ) -> Result<()> {
        statement(
            "INSERT INTO account_deletions (owner, deleted_time, tokens_expire_time) \
             VALUES ($1, $2, $3) ON CONFLICT (owner) DO NOTHING",
        )
        .uuid(owner)
        .time(time)
        .time(tokens_expire)
        .execute(&mut self.db.write().await?)
        .await?;
        Ok(())
    }

    async fn pending_account_deletions(&self) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        statement(
            "SELECT owner, tokens_expire_time FROM account_deletions WHERE done_time IS NULL \
             ORDER BY deleted_time",
        )
        .fetch_all(&mut self.db.read().await?)
        .await?
        .iter()
        .map(|row| Ok((row.uuid("owner")?, row.time("tokens_expire_time")?)))
        .collect()
    }

    async fn delete_tasks_of(&self, owner: Uuid, limit: usize) -> Result<u64> {
        // A bounded batch, so one deletion never holds the write lock long.
        let deleted = statement(
            "DELETE FROM tasks WHERE id IN \
             (SELECT id FROM tasks WHERE owner = $1 ORDER BY id LIMIT $2)",
        )
        .uuid(owner)
        .big_int(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&mut self.db.write().await?)
        .await?;
        Ok(deleted)
    }

    async fn finish_account_deletion(&self, owner: Uuid, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        statement("DELETE FROM task_counts WHERE owner = $1")
            .uuid(owner)
            .execute(&mut tx)
            .await?;
        statement("UPDATE account_deletions SET done_time = $2 WHERE owner = $1")
            .uuid(owner)
            .time(now)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn page_token_secret(&self) -> Result<SecretBox<[u8]>> {
        let candidate: [u8; 32] = rand::random();
        let mut conn = self.db.write().await?;
        statement(
            "INSERT INTO service_secrets (name, value) VALUES ('page_token', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bytes(candidate.to_vec())
        .execute(&mut conn)
        .await?;
        let row = statement("SELECT value FROM service_secrets WHERE name = 'page_token'")
            .fetch_one(&mut conn)
            .await?;
        Ok(row.bytes("value")?.into())
    }

    async fn ping(&self) -> bool {
        self.db.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL statement of a pgbench script beside this file.
    fn script(text: &str) -> String {
        text.lines()
            .filter(|line| !line.starts_with("--") && !line.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The benchmark's baselines run exactly what the store sends, so
    /// neither can change without the other.
    #[test]
    fn the_pgbench_scripts_run_the_stores_list_sql() {
        let first_page = ListQuery {
            completed: None,
            search: None,
            order: OrderBy::CreateTimeDesc,
        };
        let as_pgbench = |statement: serving::sql::Statement<'_>| {
            format!("{};", statement.sql())
                .replace("$1", ":owner")
                .replace("$2", "51")
        };
        assert_eq!(
            as_pgbench(list_statement(COLUMNS, Uuid::nil(), &first_page, None, 51).unwrap()),
            script(include_str!("pgbench/list_page.sql"))
        );
        assert_eq!(
            as_pgbench(page_statement(Uuid::nil(), &first_page, None, 51).unwrap()),
            script(include_str!("pgbench/list_tx.sql"))
        );
    }
}
