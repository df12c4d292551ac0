//! Schema migrations compiled into the binary, without sqlx's macros.
//!
//! sqlx's `migrate!` is a procedural macro: it costs the first build a
//! second compilation of sqlx's drivers (SQLite's C library included) for
//! the macro's host. The files are embedded with `include_str!` instead
//! (see [`migration!`](crate::migration)) and read into a
//! [`Migrator`] when the database opens, exactly as sqlx reads a
//! migrations folder: the version and description from the file name, a
//! SHA-384 checksum of the text, `-- no-transaction` on the first line.
//! A database migrated by either way is the same to the other.

use std::{borrow::Cow, future::Future, pin::Pin};

use sqlx::{
    error::BoxDynError,
    migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator},
};

/// One migration file, named `<VERSION>_<DESCRIPTION>.sql` as sqlx names
/// them, with its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    pub file: &'static str,
    pub sql: &'static str,
}

/// A migration of the calling crate's `folder`, compiled in:
/// `migration!("migrations/sqlite", "0001_init.sql")`.
#[macro_export]
macro_rules! migration {
    ($folder:literal, $file:literal) => {
        $crate::migrations::Script {
            file: $file,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/",
                $folder,
                "/",
                $file
            )),
        }
    };
}

/// The migrations of a service, one set per backend, in version order.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static [Script],
    pub postgres: &'static [Script],
}

impl Migrations {
    /// Panics unless these are exactly the files of `folder`'s `sqlite`
    /// and `postgres` folders (see [`assert_embeds_folder`]).
    pub fn assert_embed(&self, folder: &std::path::Path) {
        assert_embeds_folder(&folder.join("sqlite"), self.sqlite);
        assert_embeds_folder(&folder.join("postgres"), self.postgres);
    }
}

/// Builds sqlx's migrator for `scripts`.
pub async fn migrator(scripts: &'static [Script]) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(scripts)).await
}

#[derive(Debug)]
struct Embedded(&'static [Script]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let resolved = self.0.iter().map(resolve).collect::<Result<Vec<_>, _>>();
        Box::pin(async move {
            let mut migrations = resolved?;
            migrations.sort_by_key(|migration| migration.version);
            Ok(migrations)
        })
    }
}

fn resolve(script: &Script) -> Result<Migration, BoxDynError> {
    let (version, rest) = script
        .file
        .split_once('_')
        .filter(|(_, rest)| rest.ends_with(".sql"))
        .ok_or_else(|| format!("{}: not named <VERSION>_<DESCRIPTION>.sql", script.file))?;
    let version: i64 = version
        .parse()
        .map_err(|_| format!("{}: the version is not an integer", script.file))?;
    let migration_type = MigrationType::from_filename(rest);
    let description = rest
        .trim_end_matches(migration_type.suffix())
        .replace('_', " ");
    Ok(Migration::new(
        version,
        Cow::Owned(description),
        migration_type,
        Cow::Borrowed(script.sql),
        script.sql.starts_with("-- no-transaction"),
    ))
}

/// Panics unless `scripts` are exactly the `.sql` files of `folder`, with
/// the same text: for a test in each service, so that a file added to the
/// folder but not to the list fails the build's tests, not a deployment.
pub fn assert_embeds_folder(folder: &std::path::Path, scripts: &[Script]) {
    let mut on_disk: Vec<(String, String)> = std::fs::read_dir(folder)
        .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "sql"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("a readable migration");
            (name, text)
        })
        .collect();
    on_disk.sort();
    let mut embedded: Vec<(String, String)> = scripts
        .iter()
        .map(|script| (script.file.to_owned(), script.sql.to_owned()))
        .collect();
    embedded.sort();
    let names = |files: &[(String, String)]| {
        files
            .iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&embedded),
        names(&on_disk),
        "the compiled-in migrations are not the files of {}",
        folder.display()
    );
    assert!(
        embedded == on_disk,
        "a compiled-in migration differs from its file"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPTS: &[Script] = &[
        Script {
            file: "0002_second_step.sql",
            sql: "-- no-transaction\nCREATE INDEX i ON t (a);",
        },
        Script {
            file: "0001_first_step.sql",
            sql: "CREATE TABLE t (a INTEGER);",
        },
    ];

    #[tokio::test]
    async fn files_are_read_as_sqlx_reads_a_folder() {
        let folder = tempfile::tempdir().unwrap();
        for script in SCRIPTS {
            std::fs::write(folder.path().join(script.file), script.sql).unwrap();
        }
        let from_folder = Migrator::new(folder.path()).await.unwrap();
        let embedded = migrator(SCRIPTS).await.unwrap();

        let fields = |migrator: &Migrator| {
            migrator
                .iter()
                .map(|m| {
                    (
                        m.version,
                        m.description.to_string(),
                        m.migration_type,
                        m.sql.to_string(),
                        m.checksum.to_vec(),
                        m.no_tx,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(&embedded), fields(&from_folder));
        assert_eq!(
            embedded.iter().map(|m| m.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(embedded.iter().nth(1).unwrap().no_tx);
        assert_embeds_folder(folder.path(), SCRIPTS);
    }

    #[tokio::test]
    async fn a_misnamed_file_is_refused() {
        for file in ["init.sql", "one_init.sql", "0001_init.txt"] {
            let scripts: &'static [Script] = Box::leak(Box::new([Script { file, sql: "" }]));
            let error = migrator(scripts).await.unwrap_err();
            assert!(error.to_string().contains(file), "{error}");
        }
    }

    #[test]
    #[should_panic(expected = "not the files of")]
    fn a_file_missing_from_the_list_is_found() {
        let folder = tempfile::tempdir().unwrap();
        for script in SCRIPTS {
            std::fs::write(folder.path().join(script.file), script.sql).unwrap();
        }
        assert_embeds_folder(folder.path(), &SCRIPTS[..1]);
    }
}
