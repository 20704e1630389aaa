//! The SQLite side of the shared store code (`src/shared/`): the pool,
//! connection and query types (rusqlite, through [`super::lite`]), and the
//! few places where SQLite's SQL or types differ from PostgreSQL's. The
//! shared files write SQL with `$N` parameters, which SQLite binds by
//! number like `?N`.

pub(crate) use super::lite::{
    query, query_as, query_scalar, Conn, Executor, Pool, QueryBuilder as Builder, Row, Tx,
};

use confab_proto::UserId;

use crate::types::{NewToken, TokenKind};
use crate::Result;

/// A result row.
pub(crate) type DbRow = super::lite::LiteRow;
/// What [`id_list`] binds: the ids as one JSON array text.
pub(crate) type IdList = String;
/// A small code column (`tokens.kind`, …): INTEGER, read and bound as i64.
pub(crate) type Code = i64;

/// Begins a write transaction. `IMMEDIATE` takes the write lock at once, so
/// this writer queues on SQLite's lock behind the writer thread instead of
/// failing when it upgrades a read.
pub(crate) async fn begin_write(db: &Pool) -> Result<Tx> {
    Tx::begin(db, "BEGIN IMMEDIATE").await
}

/// `column IN <the ids bound at param>`: the list travels as JSON, so one
/// statement serves any number of ids.
pub(crate) fn in_ids(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT value FROM json_each({param}))")
}

/// The scalar "larger of two" function (SQLite's multi-argument `MAX`).
pub(crate) const GREATEST: &str = "MAX";

/// No row locks on SQLite: its one writer takes rows one at a time anyway.
pub(crate) const SKIP_LOCKED: &str = "";

/// The value to bind for [`in_ids`].
pub(crate) fn id_list(ids: &[i64]) -> Result<IdList> {
    Ok(serde_json::to_string(ids)?)
}

/// A row lock clause for `alias`: none on SQLite, whose single writer (every
/// write transaction begins `IMMEDIATE`) already serialises the writes.
pub(crate) fn for_update_of(_alias: &str) -> String {
    String::new()
}

/// Locks users' rows: nothing to do on SQLite, where the write transaction
/// (begun `IMMEDIATE`) already holds the database's one write lock.
pub(crate) async fn lock_users(_tx: &mut Conn, _users: &[UserId]) -> Result<()> {
    Ok(())
}

/// Locks a row: nothing to do on SQLite (see [`lock_users`]).
pub(crate) async fn lock_row(_tx: &mut Conn, _table: &str, _id: i64) -> Result<()> {
    Ok(())
}

/// The `tokens.kind` code.
pub(crate) fn token_kind(kind: TokenKind) -> Code {
    kind.code()
}

/// Stores new tokens, one statement each in one transaction.
pub(crate) async fn insert_tokens(db: &Pool, tokens: Vec<NewToken>) -> Result<()> {
    let mut tx = begin_write(db).await?;
    for t in tokens {
        query("INSERT INTO tokens (hash, device_id, kind, expires_at) VALUES (?, ?, ?, ?)")
            .bind(t.hash)
            .bind(t.device_id)
            .bind(token_kind(t.kind))
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
