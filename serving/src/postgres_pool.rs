//! PostgreSQL connections, pooled without a round trip on release.
//!
//! sqlx's own pool (0.8) pings every connection as it goes back, so a
//! one-statement call such as `GetTask` made two round trips to the
//! database: its query, and the ping. This pool (deadpool's, over sqlx
//! connections) hands a connection back at once when the server has
//! answered everything asked of it, and spends a round trip only where one
//! can find something wrong:
//!
//! - **Dropped inside a transaction** (an error returned early, a call
//!   cancelled between two statements): the rollback is sent before the
//!   connection goes back, so no lock outlives its transaction.
//! - **Dropped in the middle of a statement** (a call cancelled while the
//!   server worked), or **after an error that was not the server's answer**
//!   (a broken socket, a protocol error): the connection is closed, never
//!   reused; the server rolls back whatever it had open.
//! - **Not handed out for [`PING_IF_IDLE_FOR`]**: pinged before it is; one
//!   that fails is replaced, and the call gets a fresh connection.
//! - Older than [`MAX_LIFETIME`], it is replaced when next handed out; idle
//!   for [`IDLE_TIMEOUT`], a sweep closes it.
//!
//! Connections are handed out last in, first out, so under a light load
//! the same few stay warm and the rest age out.

use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, QueueMode, RecycleError, Timeouts};
use sqlx::{
    Connection, PgConnection, TransactionManager,
    postgres::{PgConnectOptions, PgTransactionManager},
};

/// A connection not handed out for this long is pinged before it is.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A connection this old is closed instead of being handed out again (as
/// sqlx's pool does), so server-side memory a session accumulates is given
/// back now and then.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A connection idle for this long is closed by the sweep.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How often the sweep looks for idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Manager {
    connect: PgConnectOptions,
}

impl managed::Manager for Manager {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.connect).await
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        metrics: &Metrics,
    ) -> managed::RecycleResult<sqlx::Error> {
        if metrics.age() >= MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        if metrics.last_used() >= PING_IF_IDLE_FOR {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// A pool of PostgreSQL connections; clones share it.
#[derive(Clone)]
pub struct PgPool {
    pool: managed::Pool<Manager>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgPool {
    /// A pool of at most `max_connections` to `connect`, opened lazily;
    /// getting one waits at most `acquire_timeout`. Starts the idle sweep
    /// on the current Tokio runtime; it ends with the pool.
    pub fn new(connect: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> Self {
        let limit = Some(acquire_timeout);
        let pool = managed::Pool::builder(Manager { connect })
            .max_size(
                usize::try_from(max_connections)
                    .unwrap_or(usize::MAX)
                    .max(1),
            )
            .queue_mode(QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: limit,
                create: limit,
                recycle: limit,
            })
            .build()
            .expect("a pool with a runtime and a size builds");
        let weak = pool.weak();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                let idle = pool.retain(|_, metrics| metrics.last_used() < IDLE_TIMEOUT);
                drop(pool);
                for conn in idle.removed {
                    let _ = conn.close().await;
                }
            }
        });
        Self { pool }
    }

    /// A connection outside any transaction.
    pub async fn acquire(&self) -> Result<PgConn, sqlx::Error> {
        let object = self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => error,
            PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                sqlx::Error::PoolClosed
            }
        })?;
        Ok(PgConn {
            object: Some(object),
            answered: true,
        })
    }

    /// A connection inside a transaction that `begin` (a `BEGIN ...`
    /// statement) started.
    pub async fn begin(&self, begin: &'static str) -> Result<PgConn, sqlx::Error> {
        let mut conn = self.acquire().await?;
        let started = PgTransactionManager::begin(conn.start(), Some(begin.into())).await;
        conn.finish(started)?;
        Ok(conn)
    }

    /// The options connections are opened with (the listener of
    /// notifications opens its own from them).
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.pool.manager().connect
    }

    /// Connections open, and how many of them are idle.
    pub fn sizes(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// Closes the idle connections gracefully and refuses new acquisitions;
    /// connections in use are closed as they come back.
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false);
        self.pool.close();
        for conn in idle.removed {
            let _ = conn.close().await;
        }
    }
}

/// A pooled connection; see the module doc for what dropping it does.
pub struct PgConn {
    object: Option<Object<Manager>>,
    /// Whether the server has answered every statement sent on it: false
    /// from the start of a statement until its answer (a cancelled call
    /// leaves it false), and after an error the server did not send.
    answered: bool,
}

impl PgConn {
    /// The connection, for one statement whose result is then given to
    /// [`PgConn::finish`].
    pub fn start(&mut self) -> &mut PgConnection {
        self.answered = false;
        self.object.as_mut().expect("held until dropped")
    }

    /// Records how the statement begun with [`PgConn::start`] ended, and
    /// passes its result on.
    pub fn finish<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.answered = match &result {
            Ok(_) => true,
            Err(error) => is_the_servers_answer(error),
        };
        result
    }

    /// Commits the transaction this connection is in.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let committed = PgTransactionManager::commit(self.start()).await;
        self.finish(committed)
    }
}

/// Whether `error` is the server's answer to a statement, after which the
/// connection is in step with it (an SQL error, a constraint, the
/// statement's time limit) rather than a failure of the connection.
fn is_the_servers_answer(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => !db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(mut object) = self.object.take() else {
            return;
        };
        if !self.answered {
            let conn = Object::take(object);
            in_background(async move {
                let _ = conn.close().await;
            });
            return;
        }
        if object.is_in_transaction() {
            PgTransactionManager::start_rollback(&mut object);
        }
        if object.should_flush() {
            // The rollback goes out now; the connection goes back to the
            // pool when it is answered, or is closed if it is not.
            in_background(async move {
                if object.ping().await.is_err() {
                    drop(Object::take(object));
                }
            });
        }
    }
}

/// Runs `work` on the current Tokio runtime; outside one (a runtime being
/// dropped), drops it, which closes whatever connection it held.
fn in_background(work: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(work);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection as _;

    use crate::{
        database::is_unavailable,
        sql::{Db, statement},
    };

    /// A pool of `size` on the test server, or `None` (said aloud) without one.
    async fn open(size: u32) -> Option<(Db, test_harness::TestDatabase)> {
        let Some(database) = test_harness::TestDatabase::postgres().await else {
            eprintln!(
                "SKIPPED PostgreSQL: set {} to run this test",
                test_harness::POSTGRES_URL_VAR
            );
            return None;
        };
        let db = crate::sql::tests::open(&database.url, size).await;
        Some((db, database))
    }

    /// The server process behind the connection a read is given.
    async fn backend_pid(db: &Db) -> i32 {
        let row = statement("SELECT CAST(pg_backend_pid() AS BIGINT)")
            .fetch_one(&mut db.read().await.unwrap())
            .await
            .unwrap();
        i32::try_from(row.big_int(0).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_gives_its_locks_back_at_once() {
        let Some((db, _database)) = open(2).await else {
            return;
        };
        let mut setup = db.begin_write().await.unwrap();
        for sql in [
            "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
            "INSERT INTO t VALUES (1, 0)",
        ] {
            statement(sql).execute(&mut setup).await.unwrap();
        }
        setup.commit().await.unwrap();

        // One connection held aside, so the transaction gets the other.
        let mut other = db.read().await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        statement("UPDATE t SET n = 1 WHERE id = 1")
            .execute(&mut tx)
            .await
            .unwrap();
        statement("INSERT INTO t VALUES (2, 0)")
            .execute(&mut tx)
            .await
            .unwrap();
        drop(tx);

        // The row's lock is released without the connection being used
        // again: otherwise this waits for the statement limit and fails.
        let updated = statement("UPDATE t SET n = 2 WHERE id = 1")
            .execute(&mut other)
            .await
            .expect("the dropped transaction's lock is gone");
        assert_eq!(updated, 1);
        let rows = statement("SELECT id, n FROM t ORDER BY id")
            .fetch_all(&mut other)
            .await
            .unwrap();
        let rows: Vec<(i64, i64)> = rows
            .iter()
            .map(|row| (row.big_int(0).unwrap(), row.big_int(1).unwrap()))
            .collect();
        assert_eq!(rows, [(1, 2)], "the dropped transaction's insert is gone");
    }

    #[tokio::test]
    async fn a_connection_dropped_in_the_middle_of_a_statement_is_not_reused() {
        let Some((db, _database)) = open(1).await else {
            return;
        };
        statement("CREATE TABLE t (id BIGINT PRIMARY KEY)")
            .execute(&mut db.write().await.unwrap())
            .await
            .unwrap();
        let first = backend_pid(&db).await;

        // A call cancelled while the server works, inside a transaction
        // that has written.
        let mut tx = db.begin_write().await.unwrap();
        statement("INSERT INTO t VALUES (1)")
            .execute(&mut tx)
            .await
            .unwrap();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(200),
            statement("SELECT pg_sleep(30)").execute(&mut tx),
        )
        .await;
        assert!(cancelled.is_err(), "the sleep outlasts the call");
        drop(tx);

        // The one connection of the pool is a new one, free at once, and
        // the cancelled transaction's write was rolled back.
        let second = backend_pid(&db).await;
        assert_ne!(first, second);
        let rows = statement("SELECT COUNT(*) FROM t")
            .fetch_one(&mut db.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(rows.big_int(0).unwrap(), 0);
    }

    async fn terminate(url: &str, pid: i32) {
        let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(ended, "backend {pid} ended");
        admin.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_that_failed_is_replaced_and_not_reused() {
        let Some((db, database)) = open(1).await else {
            return;
        };
        let first = backend_pid(&db).await;
        terminate(&database.url, first).await;

        // Used again at once, the dead connection fails the call with
        // UNAVAILABLE, and is thrown away.
        let error = statement("SELECT 1")
            .execute(&mut db.read().await.unwrap())
            .await
            .expect_err("the connection is gone");
        assert!(is_unavailable(&error), "{error:?}");
        let second = backend_pid(&db).await;
        assert_ne!(first, second);

        // Idle long enough, a dead connection is found out before it is
        // handed out, and the call never sees it.
        terminate(&database.url, second).await;
        tokio::time::sleep(super::PING_IF_IDLE_FOR + Duration::from_millis(100)).await;
        let third = backend_pid(&db).await;
        assert_ne!(second, third);
        assert_ne!(first, third);
    }
}
