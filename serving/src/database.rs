//! Database pools from a URL: `sqlite://path` (the default, embedded) or
//! `postgres://...` (production, any Postgres-compatible engine).
//!
//! SQLite is opened in WAL mode with `synchronous=FULL` (an acknowledged
//! commit survives a crash or power loss), a busy timeout, and **two pools**:
//! readers, and a single writer connection. With one writer, writes queue
//! in the pool instead of racing for SQLite's lock, so "database is locked"
//! never reaches a client; writers still start transactions with `BEGIN
//! IMMEDIATE` so that another process on the same file (a CLI subcommand)
//! waits on the busy timeout instead of failing mid-transaction.
//!
//! Three guards hold on every connection, whatever the backend:
//!
//! - **Every statement has a time limit** (`statement_timeout`), so no
//!   single call can hold a connection for long (checklist I3).
//!   PostgreSQL enforces it itself (`statement_timeout`, error 57014);
//!   SQLite gets a progress handler, armed each time a connection is handed
//!   out, that interrupts whatever runs past the limit (`SQLITE_INTERRUPT`).
//!   Both are reported by [`is_timeout`]. Migrations run before the limit
//!   applies, on a connection of their own.
//! - **A connection never goes back to the pool inside a transaction.** A
//!   call cancelled at the wrong moment (a client's deadline firing just as
//!   sqlx acknowledged `BEGIN IMMEDIATE` but before it built the
//!   `Transaction` that would roll it back) can leave a SQLite connection
//!   in an open transaction that nobody owns. Every later write on the one
//!   writer connection would then run inside it, uncommitted, and the next
//!   `BEGIN` would fail. Each released SQLite connection is checked, and
//!   one still in a transaction is closed (which rolls it back) instead.
//!   A PostgreSQL connection dropped inside a transaction has it rolled
//!   back before it goes back, and one dropped in the middle of a statement
//!   (`BEGIN` included) is closed ([`crate::postgres_pool`]).
//! - Acquiring waits at most [`ACQUIRE_TIMEOUT`]; past it the caller gets an
//!   error that [`is_unavailable`] recognises.
//!
//! PostgreSQL connections are pooled by [`crate::postgres_pool`], which
//! spends no round trip when a connection goes back and checks one only
//! where a check can find something (its module doc says where).

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    Connection, SqliteConnection, SqlitePool,
    postgres::PgConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{
    migrations::{Migrations, migrator},
    postgres_pool::PgPool,
};

/// How long a call waits for a connection before answering `UNAVAILABLE`.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Virtual-machine steps SQLite runs between two looks at the clock: about
/// a tenth of a millisecond of work, so the limit is kept closely at no
/// measurable cost.
const SQLITE_PROGRESS_STEPS: i32 = 10_000;

/// A connected database.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

/// How pools are sized and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most pooled connections (PostgreSQL; SQLite readers). SQLite always
    /// has exactly one writer.
    pub max_connections: u32,
    /// Longest time one statement may run before it is stopped.
    pub statement_timeout: Duration,
}

impl PoolOptions {
    pub const fn new(max_connections: u32, statement_timeout: Duration) -> Self {
        Self {
            max_connections,
            statement_timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    Scheme,
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Database {
    /// Connects to `url`, brings its schema up to date with `migrations`
    /// (under sqlx's lock, so replicas starting together are safe), and
    /// returns pools bounded by `options`.
    pub async fn open(
        url: &SecretString,
        options: PoolOptions,
        migrations: Migrations,
    ) -> Result<Self, ConnectError> {
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            create_private(connect.get_filename())?;
            let mut migrating = SqliteConnection::connect_with(&connect).await?;
            migrator(migrations.sqlite)
                .await?
                .run_direct(&mut migrating)
                .await?;
            migrating.close().await?;

            let writer = sqlite_pool(1, options.statement_timeout)
                .connect_with(connect.clone())
                .await?;
            let reader = sqlite_pool(options.max_connections.max(2), options.statement_timeout)
                .connect_with(connect.read_only(true))
                .await?;
            Ok(Self::Sqlite { reader, writer })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = PgConnectOptions::from_str(url)?;
            let mut migrating = sqlx::PgConnection::connect_with(&connect).await?;
            migrator(migrations.postgres)
                .await?
                .run_direct(&mut migrating)
                .await?;
            migrating.close().await?;

            let limited = connect.options([(
                "statement_timeout",
                options.statement_timeout.as_millis().max(1).to_string(),
            )]);
            let pool = PgPool::new(limited, options.max_connections, ACQUIRE_TIMEOUT);
            Ok(Self::Postgres(pool))
        } else {
            Err(ConnectError::Scheme)
        }
    }

    /// Whether the database answers a trivial query right now.
    pub async fn ping(&self) -> bool {
        const PING: &str = "SELECT 1";
        let result = match self {
            Self::Sqlite { reader, .. } => sqlx::query(PING).execute(reader).await.map(drop),
            Self::Postgres(pool) => match pool.acquire().await {
                Ok(mut conn) => {
                    let pinged = sqlx::query(PING).execute(conn.start()).await;
                    conn.finish(pinged).map(drop)
                }
                Err(error) => Err(error),
            },
        };
        result.is_ok()
    }

    /// Connections open in the pools, and how many of them are idle.
    pub fn pool_sizes(&self) -> (u32, u32) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match self {
            Self::Sqlite { reader, writer } => (
                reader.size() + writer.size(),
                count(reader.num_idle()) + count(writer.num_idle()),
            ),
            Self::Postgres(pool) => {
                let (size, idle) = pool.sizes();
                (count(size), count(idle))
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite { reader, writer } => {
                reader.close().await;
                writer.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// Creates the database file's folder (mode 0700) and the file itself
/// (mode 0600) when they do not exist, whatever the umask: SQLite gives
/// the `-wal` and `-shm` files the mode of the database file, so all of
/// them are readable by the service's user only (checklist K2).
fn create_private(file: &std::path::Path) -> Result<(), ConnectError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let failed = |path: &std::path::Path, source| ConnectError::Folder {
        path: path.display().to_string(),
        source,
    };
    if let Some(folder) = file
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|source| failed(folder, source))?;
    }
    if file.as_os_str().is_empty() || file.to_str() == Some(":memory:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(failed(file, source)),
    }
}

/// A SQLite pool whose connections are time-limited and never released
/// inside a transaction (see the module doc).
fn sqlite_pool(max_connections: u32, statement_timeout: Duration) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| Box::pin(arm_time_limit(conn, statement_timeout)))
        .before_acquire(move |conn, _| {
            Box::pin(async move {
                arm_time_limit(conn, statement_timeout).await?;
                Ok(true)
            })
        })
        .after_release(|conn, _| {
            Box::pin(async move {
                // Commands run in order: the ping waits for a rollback that
                // a dropped `Transaction` queued, so only a transaction
                // nobody will end is still open after it.
                conn.ping().await?;
                if conn.is_in_transaction() {
                    tracing::warn!(
                        "a database connection came back inside a transaction nobody owns; \
                         closing it, which rolls the transaction back"
                    );
                    return Ok(false);
                }
                Ok(true)
            })
        })
}

/// Interrupts whatever `conn` runs from now on once `limit` has passed.
async fn arm_time_limit(conn: &mut SqliteConnection, limit: Duration) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + limit;
    conn.lock_handle()
        .await?
        .set_progress_handler(SQLITE_PROGRESS_STEPS, move || Instant::now() < deadline);
    Ok(())
}

/// Whether a driver error means the database cannot be reached right now
/// (answer `UNAVAILABLE`, the client may retry) rather than a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            // SQLite: BUSY / LOCKED. PostgreSQL: connection exceptions (08),
            // operator intervention such as admin shutdown (57, except the
            // statement timeout, see `is_timeout`), and serialization
            // failures (40001), which are safe to retry.
            matches!(code, "5" | "6" | "517" | "262")
                || code.starts_with("08")
                || (code.starts_with("57") && code != POSTGRES_QUERY_CANCELED)
                || code == "40001"
        }
        _ => false,
    }
}

/// PostgreSQL's `query_canceled`, raised when `statement_timeout` fires.
const POSTGRES_QUERY_CANCELED: &str = "57014";
/// SQLite's `SQLITE_INTERRUPT`, raised when the progress handler stops a
/// statement.
const SQLITE_INTERRUPT: &str = "9";

/// Whether a statement was stopped for running past its time limit.
pub fn is_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some(POSTGRES_QUERY_CANCELED | SQLITE_INTERRUPT)))
}

/// Whether a driver error is a unique-constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use sqlx::Acquire;

    use super::*;

    const MIGRATIONS: Migrations = Migrations {
        sqlite: &[],
        postgres: &[],
    };

    async fn sqlite(folder: &tempfile::TempDir, timeout: Duration) -> (SqlitePool, SqlitePool) {
        let url = format!("sqlite://{}", folder.path().join("test.db").display());
        match Database::open(&url.into(), PoolOptions::new(2, timeout), MIGRATIONS)
            .await
            .expect("open a SQLite file")
        {
            Database::Sqlite { reader, writer } => (reader, writer),
            Database::Postgres(_) => unreachable!("a sqlite URL"),
        }
    }

    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_is_not_reused() {
        let folder = tempfile::tempdir().unwrap();
        let (_, writer) = sqlite(&folder, Duration::from_secs(5)).await;
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&writer)
            .await
            .unwrap();
        {
            // What a cancelled `begin_with` can leave behind: a transaction
            // that no `Transaction` value will ever end.
            let mut conn = writer.acquire().await.unwrap();
            let orphan = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
            std::mem::forget(orphan);
        }
        // The next write starts a transaction of its own, and what it
        // commits is really committed.
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut fresh = SqliteConnection::connect(&format!(
            "sqlite://{}",
            folder.path().join("test.db").display()
        ))
        .await
        .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(fresh.acquire().await.unwrap())
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn a_sqlite_statement_past_its_time_limit_is_stopped() {
        let folder = tempfile::tempdir().unwrap();
        let (reader, _) = sqlite(&folder, Duration::from_millis(100)).await;
        // Counts to a billion: seconds of work without the limit.
        let error = sqlx::query_scalar::<_, i64>(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) \
             SELECT COUNT(*) FROM n",
        )
        .fetch_one(&reader)
        .await
        .expect_err("stopped by the limit");
        assert!(is_timeout(&error), "{error:?}");
        assert!(!is_unavailable(&error));
        // The connection stays usable, with a fresh limit on its next use.
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&reader)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
}
