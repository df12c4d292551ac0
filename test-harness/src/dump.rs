//! What someone who copies a database holds: every byte of an SQLite
//! database with its `-wal` and `-shm` files, or the `pg_dump` of a
//! PostgreSQL database, as one buffer to search.
//!
//! `pg_dump` comes with PostgreSQL (`/usr/lib/postgresql/<version>/bin`, or
//! `/usr/bin` on Debian). Without it a test of a dump prints that it
//! skipped, except in CI (`CI` set), where a missing tool fails the test.

use std::{path::PathBuf, process::Command};

use crate::{Backend, TestDatabase};

/// The dump of `database`, or `None` when it is PostgreSQL and no
/// `pg_dump` is installed outside CI.
pub fn dump(database: &TestDatabase) -> Option<Vec<u8>> {
    match database.backend {
        Backend::Sqlite => Some(sqlite_files(database)),
        Backend::Postgres => pg_dump(&database.url),
    }
}

/// The database file and its `-wal` and `-shm` files, those that exist,
/// one after the other.
fn sqlite_files(database: &TestDatabase) -> Vec<u8> {
    let path = database
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .expect("split yields at least one part")
        .to_owned();
    let mut bytes = std::fs::read(&path).expect("the SQLite database file exists");
    for suffix in ["-wal", "-shm"] {
        if let Ok(more) = std::fs::read(format!("{path}{suffix}")) {
            bytes.extend_from_slice(&more);
        }
    }
    bytes
}

/// `pg_dump` of the database at `url` (plain SQL, every table's rows).
fn pg_dump(url: &str) -> Option<Vec<u8>> {
    let Some(program) = pg_dump_program() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test database dumps, but pg_dump is not installed"
        );
        eprintln!(
            "SKIPPED the PostgreSQL dump: install pg_dump (apt-get install postgresql-client)"
        );
        return None;
    };
    let output = Command::new(&program)
        .args(["--no-owner", "--no-privileges", "--dbname", url])
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(output.stdout)
}

/// The newest `pg_dump` installed (a newer one dumps older servers, not
/// the other way round).
fn pg_dump_program() -> Option<PathBuf> {
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let program = entry.path().join("bin/pg_dump");
            program.exists().then_some((version, program))
        })
        .collect();
    versioned.sort();
    versioned
        .pop()
        .map(|(_, program)| program)
        .or_else(|| Some(PathBuf::from("/usr/bin/pg_dump")).filter(|program| program.exists()))
}
