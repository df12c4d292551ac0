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

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// How long a call waits for a connection before answering `UNAVAILABLE`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected database.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
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
}

impl Database {
    /// Connects to `url`. A PostgreSQL pool holds at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, ConnectError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            if let Some(folder) = options.get_filename().parent()
                && !folder.as_os_str().is_empty()
            {
                std::fs::create_dir_all(folder).map_err(|source| ConnectError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
            }
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
                .await?;
            let reader = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.read_only(true))
                .await?;
            Ok(Self::Sqlite { reader, writer })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
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
            Self::Postgres(pool) => sqlx::query(PING).execute(pool).await.map(drop),
        };
        result.is_ok()
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
            // operator intervention such as admin shutdown (57), and
            // serialization failures (40001), which are safe to retry.
            matches!(code, "5" | "6" | "517" | "262")
                || code.starts_with("08")
                || code.starts_with("57")
                || code == "40001"
        }
        _ => false,
    }
}

/// Whether a driver error is a unique-constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
