//! rusqlite for the statements the two backends share: small pools of
//! rusqlite connections (read-only ones for reads, one for the rare writes
//! outside the writer thread) whose statements run on Tokio's blocking
//! threads, never on its workers, and the few query calls the shared code
//! makes, shaped like sqlx's (`query(sql).bind(v).fetch_one(db)`,
//! `query_as`, `query_scalar`, a query builder), so the code in
//! `src/shared/` reads the same over PostgreSQL (sqlx) and SQLite.
//!
//! Parameters are written `$N` (or `?N`) as on PostgreSQL and bound by
//! their number. Each statement is prepared once per connection and cached.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{FromSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Statement, ToSql};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Result, StoreError};

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// How long a statement waits for SQLite's write lock (held by the writer
/// thread for one batch at a time) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pool's connections may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only (`SQLITE_OPEN_READ_ONLY`).
    Read,
    /// Reads and writes; the first one creates the file.
    Write,
}

/// Opens one connection with Confab's settings (the same as the writer
/// thread's: WAL, `synchronous = FULL`, foreign keys, no automatic
/// checkpoint).
pub(crate) fn open(path: &Path, access: Access) -> Result<Connection> {
    let flags = match access {
        Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
        Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         PRAGMA temp_store = memory;
         PRAGMA cache_size = -32000;",
    )?;
    if access == Access::Write {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    access: Access,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the lock was held left only a list of connections.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool of at most `size` connections to one database file, opened when
/// first needed.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool over the file at `path`; one connection is opened at once, so
    /// that a file that cannot be opened fails here.
    pub(crate) async fn open(path: &Path, access: Access, size: usize) -> Result<Pool> {
        let pool = Pool {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                access,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1))),
                closed: AtomicBool::new(false),
            }),
        };
        drop(pool.acquire().await?);
        Ok(pool)
    }

    /// Takes a connection, waiting while all are in use.
    pub(crate) async fn acquire(&self) -> Result<PoolConn> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is closed".into()));
        }
        let permit = shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the database is closed".into()))?;
        let idle = shared.idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let (path, access) = (shared.path.clone(), shared.access);
                tokio::task::spawn_blocking(move || open(&path, access))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("opening the database: {e}")))??
            }
        };
        Ok(PoolConn {
            conn: Conn { inner: Some(conn) },
            shared: shared.clone(),
            _permit: permit,
        })
    }

    /// Runs `f` on one of the pool's connections, on a blocking thread.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.acquire().await?.run(f).await
    }

    /// Closes the idle connections; those in use close when given back.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.permits.close();
        self.shared.idle().clear();
    }
}

/// One connection, owned while a statement runs on a blocking thread.
#[derive(Debug)]
pub(crate) struct Conn {
    inner: Option<Connection>,
}

impl Conn {
    /// Runs `f` on this connection on a blocking thread. If the caller
    /// stops waiting, the statement still finishes and the connection is
    /// closed (a transaction open on it rolls back).
    pub(crate) async fn run<T, F>(&mut self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let mut conn = self.inner.take().ok_or_else(|| {
            StoreError::Unavailable("the connection closed after a cancelled statement".into())
        })?;
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            (conn, out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("database task failed: {e}")))?;
        self.inner = Some(conn);
        out
    }
}

/// A connection taken from a [`Pool`]; given back when dropped (rolled back
/// first if a transaction is still open on it).
#[derive(Debug)]
pub(crate) struct PoolConn {
    conn: Conn,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for PoolConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for PoolConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Drop for PoolConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.inner.take() else {
            return;
        };
        // An abandoned transaction: roll it back (no I/O to wait for in WAL
        // mode), or drop the connection if even that fails.
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return;
        }
        if !self.shared.closed.load(Ordering::Acquire) {
            self.shared.idle().push(conn);
        }
    }
}

/// A write transaction (`BEGIN IMMEDIATE`): rolled back unless committed.
#[derive(Debug)]
pub(crate) struct Tx {
    conn: PoolConn,
}

impl Tx {
    /// Begins a transaction with `begin` (`BEGIN IMMEDIATE`, …) on a
    /// connection of `pool`.
    pub(crate) async fn begin(pool: &Pool, begin: &'static str) -> Result<Tx> {
        let mut conn = pool.acquire().await?;
        conn.run(move |c| Ok(c.execute_batch(begin)?)).await?;
        Ok(Tx { conn })
    }

    /// Commits (and, with `synchronous = FULL`, fsyncs).
    pub(crate) async fn commit(mut self) -> Result<()> {
        self.conn.run(|c| Ok(c.execute_batch("COMMIT")?)).await
    }
}

impl Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// A statement's error. It converts into [`StoreError`] with `?`, as
/// sqlx's error does on PostgreSQL, so the shared code is written the same
/// for both backends.
#[derive(Debug)]
pub(crate) struct DbError(StoreError);

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        e.0
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> DbError {
        DbError(e)
    }
}

/// A statement's result.
pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

/// A statement's future (boxed, as sqlx's are: the shared code awaits
/// them inside `async_trait` methods, whose futures must be `Send` for
/// every lifetime of the pool borrowed).
pub(crate) type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = DbResult<T>> + Send + 'c>>;

/// Where a statement runs.
#[derive(Debug)]
pub(crate) enum Target<'c> {
    /// Any free connection of the pool.
    Pool(&'c Pool),
    /// This connection (a transaction's).
    Conn(&'c mut Conn),
}

impl<'c> Target<'c> {
    /// Runs `f` on the connection, on a blocking thread.
    fn run<T, F>(self, f: F) -> BoxFuture<'c, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        Box::pin(async move {
            match self {
                Target::Pool(pool) => pool.run(f).await,
                Target::Conn(conn) => conn.run(f).await,
            }
            .map_err(DbError)
        })
    }
}

/// What a statement can run on: a pool, or one connection (sqlx's
/// `Executor`).
pub(crate) trait Executor<'c>: Send {
    /// Where the statement runs.
    fn target(self) -> Target<'c>;
}

impl<'c> Executor<'c> for &'c Pool {
    fn target(self) -> Target<'c> {
        Target::Pool(self)
    }
}

impl<'c> Executor<'c> for &'c mut Conn {
    fn target(self) -> Target<'c> {
        Target::Conn(self)
    }
}

/// A result row: the column names and the values, owned.
#[derive(Debug, Clone)]
pub(crate) struct LiteRow {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

/// A column of a [`LiteRow`]: its position, or its name.
pub(crate) trait ColumnIndex {
    /// The position of the column in `row`.
    fn position(&self, row: &LiteRow) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn position(&self, row: &LiteRow) -> Result<usize> {
        if *self < row.values.len() {
            Ok(*self)
        } else {
            Err(StoreError::Corrupt(format!("no column {self} in the row")))
        }
    }
}

impl ColumnIndex for &str {
    fn position(&self, row: &LiteRow) -> Result<usize> {
        row.columns
            .iter()
            .position(|c| c == self)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {self:?} in the row")))
    }
}

/// Reading a column of a row (sqlx's `Row::try_get`, for SQLite rows).
pub(crate) trait Row {
    /// The value of column `index` as `T`.
    fn try_get<T: FromSql, I: ColumnIndex>(&self, index: I) -> DbResult<T>;
}

impl Row for LiteRow {
    fn try_get<T: FromSql, I: ColumnIndex>(&self, index: I) -> DbResult<T> {
        let i = index.position(self)?;
        T::column_result(ValueRef::from(&self.values[i])).map_err(|e| {
            DbError(StoreError::Corrupt(format!(
                "column {:?}: {e}",
                self.columns[i]
            )))
        })
    }
}

/// A type made from a whole row (the tuples `query_as` returns).
pub(crate) trait FromRow: Sized {
    /// Reads the row, column by position.
    fn from_row(row: &LiteRow) -> DbResult<Self>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSql),+> FromRow for ($($t,)+) {
            fn from_row(row: &LiteRow) -> DbResult<Self> {
                Ok(($(row.try_get::<$t, usize>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// What an executed statement did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    rows: u64,
}

impl Done {
    /// Rows inserted, updated or deleted.
    pub(crate) fn rows_affected(&self) -> u64 {
        self.rows
    }
}

/// An owned copy of a bound value.
fn owned(value: &impl ToSql) -> Result<Value> {
    match value.to_sql()? {
        ToSqlOutput::Borrowed(v) => Ok(v.into()),
        ToSqlOutput::Owned(v) => Ok(v),
        other => Err(StoreError::Corrupt(format!("cannot bind {other:?}"))),
    }
}

/// Binds `params` to `st`: `$N` and `?N` take the Nth value, a bare `?`
/// the one at its position.
fn bind(st: &mut Statement<'_>, params: &[Value]) -> Result<()> {
    for i in 1..=st.parameter_count() {
        let n = match st.parameter_name(i) {
            None => i,
            Some(name) => name
                .get(1..)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|_| name.starts_with('$') || name.starts_with('?'))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("parameter {name:?}: write $N or ?N"))
                })?,
        };
        let value = params.get(n.wrapping_sub(1)).ok_or_else(|| {
            StoreError::Corrupt(format!("parameter {n} of {} has no value", params.len()))
        })?;
        st.raw_bind_parameter(i, value)?;
    }
    Ok(())
}

/// Runs `sql` and returns up to `limit` of its rows (all of them when
/// `None`); the statement always runs to its end when no limit is given.
fn rows(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    limit: Option<usize>,
) -> Result<Vec<LiteRow>> {
    let mut st = conn.prepare_cached(sql)?;
    bind(&mut st, params)?;
    let n = st.column_count();
    let columns: Arc<[String]> = st.column_names().into_iter().map(String::from).collect();
    let mut found = st.raw_query();
    let mut out = Vec::new();
    while let Some(row) = found.next()? {
        let values = (0..n)
            .map(|i| row.get::<_, Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(LiteRow {
            columns: columns.clone(),
            values,
        });
        if limit == Some(out.len()) {
            break;
        }
    }
    Ok(out)
}

/// A statement and its bound values (sqlx's `query`).
#[derive(Debug)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub(crate) struct Query {
    sql: String,
    params: Vec<Value>,
    bad: Option<StoreError>,
}

/// A statement to run with [`Query::execute`] or fetch rows of.
pub(crate) fn query(sql: &str) -> Query {
    Query {
        sql: sql.to_owned(),
        params: Vec::new(),
        bad: None,
    }
}

impl Query {
    /// Binds the next parameter (`$1`, `$2`, … in order of binding).
    pub(crate) fn bind<T: ToSql>(mut self, value: T) -> Query {
        match owned(&value) {
            Ok(v) => self.params.push(v),
            Err(e) => self.bad = Some(e),
        }
        self
    }

    fn fetch<'c>(self, db: impl Executor<'c>, limit: Option<usize>) -> BoxFuture<'c, Vec<LiteRow>> {
        let target = db.target();
        match self.bad {
            Some(e) => Box::pin(std::future::ready(Err(DbError(e)))),
            None => {
                let Query { sql, params, .. } = self;
                target.run(move |c| rows(c, &sql, &params, limit))
            }
        }
    }

    /// Runs the statement to its end; how many rows it changed.
    pub(crate) fn execute<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, Done> {
        let target = db.target();
        match self.bad {
            Some(e) => Box::pin(std::future::ready(Err(DbError(e)))),
            None => {
                let Query { sql, params, .. } = self;
                target.run(move |c| {
                    rows(c, &sql, &params, None)?;
                    Ok(Done { rows: c.changes() })
                })
            }
        }
    }

    /// The first row; an error if there is none.
    pub(crate) fn fetch_one<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, LiteRow> {
        let rows = self.fetch(db, Some(1));
        Box::pin(async move {
            rows.await?
                .pop()
                .ok_or_else(|| DbError(StoreError::Corrupt("the statement returned no row".into())))
        })
    }

    /// The first row, if any.
    pub(crate) fn fetch_optional<'c>(
        self,
        db: impl Executor<'c>,
    ) -> BoxFuture<'c, Option<LiteRow>> {
        let rows = self.fetch(db, Some(1));
        Box::pin(async move { Ok(rows.await?.pop()) })
    }

    /// Every row.
    pub(crate) fn fetch_all<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, Vec<LiteRow>> {
        self.fetch(db, None)
    }
}

/// How a [`Typed`] statement reads a row as `O`.
pub(crate) trait Decoder<O> {
    /// Reads `row`.
    fn decode(row: &LiteRow) -> DbResult<O>;
}

/// The whole row, column by position (a tuple): sqlx's `query_as`.
#[derive(Debug)]
pub(crate) struct WholeRow;

impl<O: FromRow> Decoder<O> for WholeRow {
    fn decode(row: &LiteRow) -> DbResult<O> {
        O::from_row(row)
    }
}

/// The first column: sqlx's `query_scalar`.
#[derive(Debug)]
pub(crate) struct FirstColumn;

impl<O: FromSql> Decoder<O> for FirstColumn {
    fn decode(row: &LiteRow) -> DbResult<O> {
        row.try_get(0)
    }
}

/// A statement whose rows are read as `O` by `D`.
#[derive(Debug)]
#[must_use = "a query does nothing until it is fetched"]
pub(crate) struct Typed<O, D> {
    query: Query,
    out: PhantomData<fn() -> (O, D)>,
}

/// A statement whose rows are tuples.
pub(crate) fn query_as<O: FromRow>(sql: &str) -> Typed<O, WholeRow> {
    Typed {
        query: query(sql),
        out: PhantomData,
    }
}

/// A statement whose rows are one value each.
pub(crate) fn query_scalar<O: FromSql>(sql: &str) -> Typed<O, FirstColumn> {
    Typed {
        query: query(sql),
        out: PhantomData,
    }
}

impl<O, D: Decoder<O>> Typed<O, D> {
    /// Binds the next parameter.
    pub(crate) fn bind<T: ToSql>(self, value: T) -> Typed<O, D> {
        Typed {
            query: self.query.bind(value),
            out: PhantomData,
        }
    }

    /// The first row; an error if there is none.
    pub(crate) fn fetch_one<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, O>
    where
        O: Send + 'c,
    {
        let row = self.query.fetch_one(db);
        Box::pin(async move { D::decode(&row.await?) })
    }

    /// The first row, if any.
    pub(crate) fn fetch_optional<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, Option<O>>
    where
        O: Send + 'c,
    {
        let row = self.query.fetch_optional(db);
        Box::pin(async move { row.await?.as_ref().map(D::decode).transpose() })
    }

    /// Every row.
    pub(crate) fn fetch_all<'c>(self, db: impl Executor<'c>) -> BoxFuture<'c, Vec<O>>
    where
        O: Send + 'c,
    {
        let rows = self.query.fetch_all(db);
        Box::pin(async move { rows.await?.iter().map(D::decode).collect() })
    }
}

/// A statement put together piece by piece, each bound value numbered as
/// it is pushed (sqlx's `QueryBuilder`).
#[derive(Debug)]
pub(crate) struct QueryBuilder<'a> {
    query: Query,
    args: PhantomData<&'a ()>,
}

impl QueryBuilder<'_> {
    /// Starts the statement with `init`.
    pub(crate) fn new(init: impl Into<String>) -> Self {
        QueryBuilder {
            query: Query {
                sql: init.into(),
                params: Vec::new(),
                bad: None,
            },
            args: PhantomData,
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, sql: impl Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.query.sql, "{sql}");
        self
    }

    /// Appends a parameter and binds `value` to it.
    pub(crate) fn push_bind<T: ToSql>(&mut self, value: T) -> &mut Self {
        let q = std::mem::replace(&mut self.query, query(""));
        self.query = q.bind(value);
        let n = self.query.params.len();
        self.push(format_args!("?{n}"))
    }

    /// The statement built so far (the builder is left empty).
    pub(crate) fn build(&mut self) -> Query {
        std::mem::replace(&mut self.query, query(""))
    }
}

impl crate::rows::NamedRow for LiteRow {
    fn column<T: crate::rows::Column>(&self, name: &'static str) -> Result<T> {
        Ok(self.try_get(name)?)
    }
}
