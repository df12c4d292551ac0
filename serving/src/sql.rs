//! One SQL text for both databases: the stores write each statement once,
//! in the dialect SQLite and PostgreSQL share (`$N` placeholders, `ON
//! CONFLICT`, `RETURNING`, `CASE`), and this module carries it to whichever
//! backend the service runs on.
//!
//! What really differs between the two lives here and nowhere else:
//!
//! - **Types.** A [`Statement`] binds domain values (a `Uuid`, a UTC time,
//!   text, integers, booleans, bytes) and a [`Row`] reads them back; SQLite
//!   keeps UUIDs as TEXT and times as INTEGER microseconds, PostgreSQL uses
//!   its native `uuid` and `timestamptz`.
//! - **Transactions.** [`Db::begin_write`] takes SQLite's single writer
//!   connection with `BEGIN IMMEDIATE` (the write lock up front, so no
//!   "database is locked" half-way), or a PostgreSQL connection whose
//!   writes lock the rows they read ([`Tx::for_update`] is `FOR UPDATE`
//!   there, nothing on SQLite, where the whole database is already
//!   locked). [`Db::begin_snapshot`] is one consistent read: a WAL read
//!   transaction on SQLite, `REPEATABLE READ READ ONLY` on PostgreSQL.
//!
//! A statement is built with owned or borrowed values and consumed by one
//! of the `fetch`/`execute` methods on a [`Tx`] or a pooled connection
//! ([`Conn`]); rows come back as [`Row`]s. Statements are prepared once per
//! connection and cached by both drivers, as with plain sqlx queries.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::{
    ColumnIndex, Postgres, Row as _, Sqlite, SqliteConnection, ValueRef as _,
    pool::PoolConnection,
    postgres::{PgArguments, PgRow, PgValueFormat, types::Oid},
    query::Query,
    sqlite::{SqliteArguments, SqliteRow},
};
use uuid::Uuid;

use crate::{database::Database, postgres_pool::PgConn};

pub type Result<T, E = sqlx::Error> = std::result::Result<T, E>;

/// A value bound to a statement.
#[derive(Debug, Clone)]
enum Value<'q> {
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    Text(Option<Cow<'q, str>>),
    BigInt(Option<i64>),
    SmallInt(Option<i16>),
    Bool(Option<bool>),
    Bytes(Option<Cow<'q, [u8]>>),
}

/// One SQL statement and its arguments, `$1` being the first bound.
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until it is executed"]
pub struct Statement<'q> {
    sql: Cow<'q, str>,
    values: Vec<Value<'q>>,
}

/// A statement of `sql`.
pub fn statement<'q>(sql: impl Into<Cow<'q, str>>) -> Statement<'q> {
    Statement {
        sql: sql.into(),
        values: Vec::new(),
    }
}

impl<'q> Statement<'q> {
    fn bind(mut self, value: Value<'q>) -> Self {
        self.values.push(value);
        self
    }

    /// The statement `around` makes of this one's SQL (as a subquery, say),
    /// with the same arguments: `around` may use only its placeholders.
    pub fn wrap(self, around: impl FnOnce(&str) -> String) -> Statement<'q> {
        Statement {
            sql: around(&self.sql).into(),
            values: self.values,
        }
    }

    /// The SQL text, placeholders and all.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    pub fn uuid(self, value: Uuid) -> Self {
        self.bind(Value::Uuid(Some(value)))
    }

    pub fn opt_uuid(self, value: Option<Uuid>) -> Self {
        self.bind(Value::Uuid(value))
    }

    pub fn time(self, value: DateTime<Utc>) -> Self {
        self.bind(Value::Time(Some(value)))
    }

    pub fn opt_time(self, value: Option<DateTime<Utc>>) -> Self {
        self.bind(Value::Time(value))
    }

    pub fn text(self, value: impl Into<Cow<'q, str>>) -> Self {
        self.bind(Value::Text(Some(value.into())))
    }

    pub fn opt_text(self, value: Option<impl Into<Cow<'q, str>>>) -> Self {
        self.bind(Value::Text(value.map(Into::into)))
    }

    pub fn big_int(self, value: i64) -> Self {
        self.bind(Value::BigInt(Some(value)))
    }

    pub fn small_int(self, value: i16) -> Self {
        self.bind(Value::SmallInt(Some(value)))
    }

    pub fn bool(self, value: bool) -> Self {
        self.bind(Value::Bool(Some(value)))
    }

    pub fn opt_bool(self, value: Option<bool>) -> Self {
        self.bind(Value::Bool(value))
    }

    pub fn bytes(self, value: impl Into<Cow<'q, [u8]>>) -> Self {
        self.bind(Value::Bytes(Some(value.into())))
    }

    fn sqlite(&'q self) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        let mut query = sqlx::query(&self.sql);
        for value in &self.values {
            query = match value {
                Value::Uuid(v) => query.bind(v.map(|id| id.to_string())),
                Value::Time(v) => query.bind(v.map(|time| time.timestamp_micros())),
                Value::Text(v) => query.bind(v.as_deref()),
                Value::BigInt(v) => query.bind(*v),
                Value::SmallInt(v) => query.bind(*v),
                Value::Bool(v) => query.bind(*v),
                Value::Bytes(v) => query.bind(v.as_deref()),
            };
        }
        query
    }

    fn postgres(&'q self) -> Query<'q, Postgres, PgArguments> {
        let mut query = sqlx::query(&self.sql);
        for value in &self.values {
            query = match value {
                Value::Uuid(v) => query.bind(*v),
                Value::Time(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.as_deref()),
                Value::BigInt(v) => query.bind(*v),
                Value::SmallInt(v) => query.bind(*v),
                Value::Bool(v) => query.bind(*v),
                Value::Bytes(v) => query.bind(v.as_deref()),
            };
        }
        query
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn execute(self, on: &mut impl Executor) -> Result<u64> {
        Ok(match on.connection() {
            Backend::Sqlite(conn) => self.sqlite().execute(conn).await?.rows_affected(),
            Backend::Postgres(conn) => {
                let done = self.postgres().execute(conn.start()).await;
                conn.finish(done)?.rows_affected()
            }
        })
    }

    /// The first row, if any.
    pub async fn fetch_optional(self, on: &mut impl Executor) -> Result<Option<Row>> {
        Ok(match on.connection() {
            Backend::Sqlite(conn) => self.sqlite().fetch_optional(conn).await?.map(Row::Sqlite),
            Backend::Postgres(conn) => {
                let row = self.postgres().fetch_optional(conn.start()).await;
                conn.finish(row)?.map(Row::Postgres)
            }
        })
    }

    /// The one row; `RowNotFound` when there is none.
    pub async fn fetch_one(self, on: &mut impl Executor) -> Result<Row> {
        self.fetch_optional(on)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Every row.
    pub async fn fetch_all(self, on: &mut impl Executor) -> Result<Vec<Row>> {
        Ok(match on.connection() {
            Backend::Sqlite(conn) => self
                .sqlite()
                .fetch_all(conn)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Backend::Postgres(conn) => {
                let rows = self.postgres().fetch_all(conn.start()).await;
                conn.finish(rows)?.into_iter().map(Row::Postgres).collect()
            }
        })
    }
}

/// A connection of either backend, borrowed for one statement.
pub enum Backend<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConn),
}

/// Something statements run on: a transaction or a pooled connection.
pub trait Executor: Send {
    fn connection(&mut self) -> Backend<'_>;
}

/// A pooled connection outside any transaction (each statement commits by
/// itself).
pub enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PgConn),
}

impl Executor for Conn {
    fn connection(&mut self) -> Backend<'_> {
        match self {
            Self::Sqlite(conn) => Backend::Sqlite(conn),
            Self::Postgres(conn) => Backend::Postgres(conn),
        }
    }
}

/// An open transaction; dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    /// A connection inside a transaction: see [`crate::postgres_pool`]
    /// for the rollback of one dropped uncommitted.
    Postgres(PgConn),
}

impl Executor for Tx {
    fn connection(&mut self) -> Backend<'_> {
        match self {
            Self::Sqlite(tx) => Backend::Sqlite(tx),
            Self::Postgres(tx) => Backend::Postgres(tx),
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(conn) => conn.commit().await,
        }
    }

    /// Serializes, until this transaction ends, every transaction that
    /// appends to the ordered log named `log`: on PostgreSQL a
    /// transaction-scoped advisory lock, so rows numbered from a sequence
    /// commit in the order of their numbers and a reader that has seen
    /// number n never later finds a smaller one; on SQLite nothing, as a
    /// write transaction already holds the whole database.
    pub async fn lock_log(&mut self, log: i64) -> Result<()> {
        if let Self::Postgres(conn) = self {
            let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(log)
                .execute(conn.start())
                .await;
            conn.finish(locked)?;
        }
        Ok(())
    }

    /// What a `SELECT` appends to claim the rows it reads for the rest of
    /// the transaction while other transactions skip them (a work queue
    /// served by several processes): `FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL; nothing on SQLite, where one write transaction runs at a
    /// time.
    pub fn for_update_skip_locked(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// What a `SELECT` appends to lock the rows it reads until the end of
    /// the transaction: `FOR UPDATE` on PostgreSQL; nothing on SQLite,
    /// where a write transaction holds the whole database already.
    pub fn for_update(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => " FOR UPDATE",
        }
    }
}

/// A row of either backend, read into domain values by column name or by
/// position (see [`Column`]).
pub enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A column of a [`Row`]: its name, or its position in the `SELECT` list.
/// A position spares the driver a search of the column names on every
/// read, which counts on hot paths that read many rows (`ListTasks`).
pub trait Column: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + std::fmt::Display + Copy {}

impl Column for &str {}
impl Column for usize {}

fn corrupt(column: impl Column, what: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("stored value is not {what}").into(),
    }
}

/// Built-in PostgreSQL type OIDs (`pg_type.dat`; fixed, unlike the OIDs
/// of types that extensions add).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const TEXT: u32 = 25;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const UUID: u32 = 2950;
}

/// `column` read as a `T`: by `read`, from the value's bytes, when it is
/// in binary format, of the built-in type `oid`, and not NULL (the case of
/// every column the stores read); by sqlx's own decoding otherwise, which
/// reads or refuses it, so a column of another type still decodes or fails
/// clearly, and a NULL is `None` for an optional `T`.
///
/// sqlx checks a value's type on every read by comparing type
/// descriptions, a tenth of a `ListTasks` page of 50 under callgrind (11
/// columns a row); an OID is one integer comparison.
fn pg_read<'r, T>(
    row: &'r PgRow,
    column: impl Column,
    oid: u32,
    read: impl FnOnce(&'r [u8]) -> Result<T>,
) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    let value = row.try_get_raw(column)?;
    if value.format() == PgValueFormat::Binary && value.type_info().oid() == Some(Oid(oid)) {
        // `as_bytes` fails only for NULL.
        if let Ok(bytes) = value.as_bytes() {
            return read(bytes);
        }
    }
    row.try_get(column)
}

/// A fixed-width binary value: `N` bytes, or a corrupt column.
fn fixed<const N: usize>(column: impl Column, bytes: &[u8], what: &str) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| corrupt(column, what))
}

/// A binary `timestamptz`, or a corrupt column for one out of range
/// (`infinity`, on which sqlx's decoder would panic). PostgreSQL sends
/// microseconds since 2000-01-01 UTC; read as that integer, a time costs
/// about half the instructions of sqlx's decoder, whose calendar
/// arithmetic was a tenth of a `ListTasks` page (three times per task;
/// callgrind).
fn postgres_time(column: impl Column, bytes: &[u8]) -> Result<DateTime<Utc>> {
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let micros = i64::from_be_bytes(fixed(column, bytes, "a time")?)
        .checked_add(POSTGRES_EPOCH_MICROS)
        .ok_or_else(|| corrupt(column, "a time in range"))?;
    time_from_micros(column, micros)
}

fn time_from_micros(column: impl Column, micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(column, "a time in range"))
}

impl Row {
    pub fn opt_uuid(&self, column: impl Column) -> Result<Option<Uuid>> {
        match self {
            Self::Sqlite(row) => row
                .try_get::<Option<&str>, _>(column)?
                .map(|text| Uuid::try_parse(text).map_err(|_| corrupt(column, "a UUID")))
                .transpose(),
            Self::Postgres(row) => pg_read(row, column, oid::UUID, |bytes| {
                Ok(Some(Uuid::from_bytes(fixed(column, bytes, "a UUID")?)))
            }),
        }
    }

    /// Whether `column` is NULL, without decoding it.
    pub fn is_null(&self, column: impl Column) -> Result<bool> {
        Ok(match self {
            Self::Sqlite(row) => row.try_get_raw(column)?.is_null(),
            Self::Postgres(row) => row.try_get_raw(column)?.is_null(),
        })
    }

    pub fn uuid(&self, column: impl Column) -> Result<Uuid> {
        self.opt_uuid(column)?
            .ok_or_else(|| corrupt(column, "a UUID (NULL)"))
    }

    pub fn opt_time(&self, column: impl Column) -> Result<Option<DateTime<Utc>>> {
        match self {
            Self::Sqlite(row) => row
                .try_get::<Option<i64>, _>(column)?
                .map(|micros| time_from_micros(column, micros))
                .transpose(),
            Self::Postgres(row) => pg_read(row, column, oid::TIMESTAMPTZ, |bytes| {
                postgres_time(column, bytes).map(Some)
            }),
        }
    }

    pub fn time(&self, column: impl Column) -> Result<DateTime<Utc>> {
        self.opt_time(column)?
            .ok_or_else(|| corrupt(column, "a time (NULL)"))
    }

    pub fn text(&self, column: impl Column) -> Result<String> {
        match self {
            Self::Sqlite(row) => row.try_get(column),
            Self::Postgres(row) => pg_read(row, column, oid::TEXT, |bytes| {
                std::str::from_utf8(bytes)
                    .map(str::to_owned)
                    .map_err(|_| corrupt(column, "UTF-8 text"))
            }),
        }
    }

    pub fn opt_text(&self, column: impl Column) -> Result<Option<String>> {
        if self.is_null(column)? {
            return Ok(None);
        }
        self.text(column).map(Some)
    }

    /// A `bigint` column (SQLite: any INTEGER).
    pub fn big_int(&self, column: impl Column) -> Result<i64> {
        match self {
            Self::Sqlite(row) => row.try_get(column),
            Self::Postgres(row) => pg_read(row, column, oid::INT8, |bytes| {
                Ok(i64::from_be_bytes(fixed(column, bytes, "a bigint")?))
            }),
        }
    }

    /// A `smallint` column (SQLite: any INTEGER that fits).
    pub fn small_int(&self, column: impl Column) -> Result<i16> {
        match self {
            Self::Sqlite(row) => row.try_get(column),
            Self::Postgres(row) => pg_read(row, column, oid::INT2, |bytes| {
                Ok(i16::from_be_bytes(fixed(column, bytes, "a smallint")?))
            }),
        }
    }

    pub fn bool(&self, column: impl Column) -> Result<bool> {
        match self {
            Self::Sqlite(row) => row.try_get(column),
            Self::Postgres(row) => pg_read(row, column, oid::BOOL, |bytes| {
                Ok(fixed::<1>(column, bytes, "a boolean")?[0] != 0)
            }),
        }
    }

    pub fn opt_bytes(&self, column: impl Column) -> Result<Option<Vec<u8>>> {
        if self.is_null(column)? {
            return Ok(None);
        }
        self.bytes(column).map(Some)
    }

    pub fn bytes(&self, column: impl Column) -> Result<Vec<u8>> {
        match self {
            Self::Sqlite(row) => row.try_get(column),
            Self::Postgres(row) => pg_read(row, column, oid::BYTEA, |bytes| Ok(bytes.to_vec())),
        }
    }
}

/// The pools of a [`Database`], as statements see them.
#[derive(Debug, Clone)]
pub struct Db(Database);

impl Db {
    pub fn new(database: Database) -> Self {
        Self(database)
    }

    pub fn database(&self) -> &Database {
        &self.0
    }

    /// A connection for reads (SQLite: the reader pool, which never waits
    /// for the writer).
    pub async fn read(&self) -> Result<Conn> {
        Ok(match &self.0 {
            Database::Sqlite { reader, .. } => Conn::Sqlite(reader.acquire().await?),
            Database::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// A connection for one write that needs no transaction (SQLite: the
    /// single writer).
    pub async fn write(&self) -> Result<Conn> {
        Ok(match &self.0 {
            Database::Sqlite { writer, .. } => Conn::Sqlite(writer.acquire().await?),
            Database::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// A transaction that writes (see the module doc).
    pub async fn begin_write(&self) -> Result<Tx> {
        Ok(match &self.0 {
            Database::Sqlite { writer, .. } => {
                Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            Database::Postgres(pool) => Tx::Postgres(pool.begin("BEGIN").await?),
        })
    }

    /// A read-only transaction: every statement in it sees one snapshot.
    pub async fn begin_snapshot(&self) -> Result<Tx> {
        Ok(match &self.0 {
            Database::Sqlite { reader, .. } => Tx::Sqlite(reader.begin().await?),
            Database::Postgres(pool) => Tx::Postgres(
                pool.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
        })
    }

    /// Whether the database answers a trivial query right now.
    pub async fn ping(&self) -> bool {
        self.0.ping().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{database::PoolOptions, migrations::Migrations};

    /// `url`'s database with no schema, pools of `size` connections, and
    /// statements limited to 5 s.
    pub(crate) async fn open(url: &str, size: u32) -> Db {
        let migrations = Migrations {
            sqlite: &[],
            postgres: &[],
        };
        Db::new(
            Database::open(
                &url.into(),
                PoolOptions::new(size, Duration::from_secs(5)),
                migrations,
            )
            .await
            .expect("open the database"),
        )
    }

    /// The same statements, with every kind of value, on each backend.
    async fn round_trip(db: &Db, uuid_type: &str, time_type: &str) {
        let mut tx = db.begin_write().await.unwrap();
        statement(format!(
            "CREATE TABLE t (id {uuid_type} PRIMARY KEY, at {time_type}, maybe {time_type}, \
             name TEXT, n BIGINT, small SMALLINT, flag BOOLEAN, data BYTEA)"
        ))
        .execute(&mut tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let id = Uuid::now_v7();
        let at = DateTime::from_timestamp_micros(1_764_547_200_123_456).unwrap();
        // Before PostgreSQL's epoch (2000) and before Unix's (1970).
        let early = DateTime::from_timestamp_micros(-86_400_000_001).unwrap();
        let mut tx = db.begin_write().await.unwrap();
        let inserted = statement(
            "INSERT INTO t (id, at, maybe, name, n, small, flag, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .uuid(id)
        .time(at)
        .opt_time(Some(early))
        .text("ünïcode")
        .big_int(i64::MAX)
        .small_int(3)
        .bool(true)
        .bytes(&b"\x00\x01"[..])
        .execute(&mut tx)
        .await
        .unwrap();
        assert_eq!(inserted, 1);
        tx.commit().await.unwrap();

        let mut conn = db.read().await.unwrap();
        // `$1` used twice, and out of order with `$2`.
        let row = statement("SELECT * FROM t WHERE id = $2 AND (n = $1 OR n = $1)")
            .big_int(i64::MAX)
            .uuid(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.uuid("id").unwrap(), id);
        assert_eq!(row.time("at").unwrap(), at);
        assert_eq!(row.opt_time("maybe").unwrap(), Some(early));
        // By position, as hot paths read: `at` is the second column.
        assert_eq!(row.time(1).unwrap(), at);
        assert_eq!(row.uuid(0).unwrap(), id);
        let nothing = statement(format!("SELECT CAST(NULL AS {time_type}) AS absent"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(nothing.opt_time("absent").unwrap(), None);
        assert!(nothing.is_null(0).unwrap());
        assert!(!row.is_null("at").unwrap());
        assert!(nothing.time(0).is_err(), "a NULL is not a time");
        assert_eq!(row.text("name").unwrap(), "ünïcode");
        assert_eq!(row.big_int("n").unwrap(), i64::MAX);
        assert_eq!(row.small_int("small").unwrap(), 3);
        assert!(row.bool("flag").unwrap());
        assert_eq!(row.bytes("data").unwrap(), b"\x00\x01");
        // The optional readers' NULLs; a column of another type is read by
        // sqlx's own decoding (VARCHAR as text) or refused, never misread.
        let other = statement(
            "SELECT CAST('abc' AS VARCHAR(10)) AS v, CAST(NULL AS TEXT) AS t, \
             CAST(NULL AS BYTEA) AS b, CAST(7 AS BIGINT) AS n",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(other.text("v").unwrap(), "abc");
        assert_eq!(other.opt_text("t").unwrap(), None);
        assert_eq!(other.opt_text("v").unwrap().as_deref(), Some("abc"));
        assert_eq!(other.opt_bytes("b").unwrap(), None);
        assert!(other.text("n").is_err(), "a number is not text");
        assert!(other.uuid("v").is_err(), "'abc' is not a UUID");
        assert!(other.big_int("v").is_err(), "'abc' is not a number");
        let none = statement("SELECT id FROM t WHERE id = $1")
            .uuid(Uuid::now_v7())
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        assert!(none.is_none());
    }

    #[tokio::test]
    async fn values_round_trip_on_sqlite() {
        let database = test_harness::TestDatabase::sqlite();
        round_trip(&open(&database.url, 2).await, "TEXT", "INTEGER").await;
    }

    #[tokio::test]
    async fn values_round_trip_on_postgres() {
        let Some(database) = test_harness::TestDatabase::postgres().await else {
            eprintln!(
                "SKIPPED PostgreSQL: set {} to run this test",
                test_harness::POSTGRES_URL_VAR
            );
            return;
        };
        let db = open(&database.url, 2).await;
        round_trip(&db, "uuid", "timestamptz").await;
        // Out of chrono's range: an error, never a panic.
        let row =
            statement("SELECT CAST('infinity' AS timestamptz), CAST('-infinity' AS timestamptz)")
                .fetch_one(&mut db.read().await.unwrap())
                .await
                .unwrap();
        assert!(row.time(0).is_err());
        assert!(row.opt_time(1).is_err());
    }
}
