//! Fresh, real databases: every test gets its own SQLite file or its own
//! PostgreSQL database, so tests run in parallel without seeing each
//! other's rows, and nothing is ever mocked.
//!
//! PostgreSQL tests need `TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` sets it). Without it
//! they print that they skipped and pass; CI always sets it, so CI never
//! skips. [`Backend::all`] is what [`crate::on_each_backend`] iterates over.

use std::fmt;

use sqlx::{Connection, Executor, PgConnection};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

impl Backend {
    /// SQLite always; PostgreSQL when `TEST_POSTGRES_URL` is set (a notice
    /// is printed when it is not).
    pub fn all() -> Vec<Backend> {
        if std::env::var(POSTGRES_URL_VAR).is_ok() {
            vec![Self::Sqlite, Self::Postgres]
        } else {
            eprintln!(
                "SKIPPED PostgreSQL: set {POSTGRES_URL_VAR} to run these tests on PostgreSQL too"
            );
            vec![Self::Sqlite]
        }
    }

    /// A fresh, empty database of this backend.
    pub async fn fresh(self) -> TestDatabase {
        match self {
            Self::Sqlite => TestDatabase::sqlite(),
            Self::Postgres => TestDatabase::postgres()
                .await
                .expect("TEST_POSTGRES_URL is set, so PostgreSQL must be reachable"),
        }
    }
}

/// A database that exists for one test. Dropping it removes its folder and
/// drops the PostgreSQL database.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    /// A private folder beside the database for what a service keeps in
    /// files (the key-encryption key, mails): on SQLite the database's own.
    folder: tempfile::TempDir,
    postgres: Option<PostgresCleanup>,
}

struct PostgresCleanup {
    admin_url: String,
    name: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestDatabase({}, {})", self.backend, self.url)
    }
}

impl TestDatabase {
    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", folder.path().join("test.db").display());
        Self {
            backend: Backend::Sqlite,
            url,
            folder,
            postgres: None,
        }
    }

    /// A new database on the server of `TEST_POSTGRES_URL`, or `None` when
    /// the variable is unset.
    pub async fn postgres() -> Option<Self> {
        let admin_url = std::env::var(POSTGRES_URL_VAR).ok()?;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to TEST_POSTGRES_URL");
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create a test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(Self {
            backend: Backend::Postgres,
            url,
            folder: tempfile::tempdir().expect("a temporary folder"),
            postgres: Some(PostgresCleanup { admin_url, name }),
        })
    }

    /// `name` in the database's private folder, which lives as long as
    /// the database (so a restarted service finds its files again).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.folder.path().join(name)
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(PostgresCleanup { admin_url, name }) = &self.postgres {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside a test's runtime; a thread with its own runtime
            // avoids blocking it. Best effort: a leftover database is harmless.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                            let _ = admin
                                .execute(
                                    format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)
                                        .as_str(),
                                )
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
