//! The PostgreSQL side of the shared store code (`src/shared/`): the pool
//! and connection types, and the few places where PostgreSQL's SQL or types
//! differ from SQLite's.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub(crate) use sqlx::{query, query_as, query_scalar, Row};

use confab_proto::UserId;

use crate::types::{NewToken, TokenKind};
use crate::Result;

/// The pool the shared code runs its statements on.
pub(crate) type Pool = PgPool;
/// A result row.
pub(crate) type DbRow = PgRow;
/// A statement put together piece by piece.
pub(crate) type Builder<'a> = sqlx::QueryBuilder<'a, Postgres>;

/// Where a statement runs: the pool or one connection (sqlx's executor,
/// named as the shared code names it on both backends).
pub(crate) trait Executor<'c>: sqlx::Executor<'c, Database = Postgres> {}

impl<'c, T: sqlx::Executor<'c, Database = Postgres>> Executor<'c> for T {}
/// A connection (what a transaction dereferences to).
pub(crate) type Conn = PgConnection;
/// A write transaction.
pub(crate) type Tx = Transaction<'static, Postgres>;
/// What [`id_list`] binds: a `bigint[]`.
pub(crate) type IdList = Vec<i64>;
/// A small code column (`tokens.kind`, …): SMALLINT.
pub(crate) type Code = i16;

/// Begins a write transaction (rows that decide a write are locked by the
/// statements themselves, see [`for_update_of`]).
pub(crate) async fn begin_write(db: &Pool) -> Result<Tx> {
    Ok(db.begin().await?)
}

/// `column = ANY(<the array bound at param>)`.
pub(crate) fn in_ids(column: &str, param: &str) -> String {
    format!("{column} = ANY({param})")
}

/// The scalar "larger of two" function.
pub(crate) const GREATEST: &str = "GREATEST";

/// Taking a row that another transaction holds skips it instead of waiting.
pub(crate) const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";

/// The value to bind for [`in_ids`].
pub(crate) fn id_list(ids: &[i64]) -> Result<IdList> {
    Ok(ids.to_vec())
}

/// `FOR UPDATE OF alias`: two nodes deciding on the same rows at once are
/// serialised, and the second sees the first's write.
pub(crate) fn for_update_of(alias: &str) -> String {
    format!("FOR UPDATE OF {alias}")
}

/// Locks the rows of these users, in id order, until the transaction ends
/// (`FOR NO KEY UPDATE`, which does not stop foreign-key checks).
pub(crate) async fn lock_users(tx: &mut Conn, users: &[UserId]) -> Result<()> {
    let mut ids = users.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    Ok(())
}

/// Locks the row of `table` with this `id` until the transaction ends.
pub(crate) async fn lock_row(tx: &mut Conn, table: &str, id: i64) -> Result<()> {
    sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The `tokens.kind` code (a SMALLINT).
pub(crate) fn token_kind(kind: TokenKind) -> Code {
    match kind {
        TokenKind::Access => 0,
        TokenKind::Refresh => 1,
    }
}

/// Stores new tokens in one `UNNEST` statement.
pub(crate) async fn insert_tokens(db: &Pool, tokens: Vec<NewToken>) -> Result<()> {
    if tokens.is_empty() {
        return Ok(());
    }
    let mut hashes = Vec::with_capacity(tokens.len());
    let mut devices = Vec::with_capacity(tokens.len());
    let mut kinds = Vec::with_capacity(tokens.len());
    let mut expiries = Vec::with_capacity(tokens.len());
    for t in tokens {
        hashes.push(t.hash);
        devices.push(t.device_id);
        kinds.push(token_kind(t.kind));
        expiries.push(t.expires_at);
    }
    // One statement: all or nothing, like SQLite's transaction.
    sqlx::query(
        "INSERT INTO tokens (hash, device_id, kind, expires_at)
         SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::smallint[], $4::bigint[])",
    )
    .bind(hashes)
    .bind(devices)
    .bind(kinds)
    .bind(expiries)
    .execute(db)
    .await?;
    Ok(())
}
