//! Accounts, devices and tokens.
//!
//! Shared by both backends: compiled once as `sqlite::accounts` and once as
//! `postgres::accounts`; the pool type and the SQL that differs by dialect
//! come from each backend's `dialect` module.

use confab_proto::api::User;
use confab_proto::{DeviceId, UserId};

use super::dialect::{self, Conn, Pool, Row};
use super::rows::{self, USER_COLUMNS};
use crate::types::*;
use crate::Result;

pub(crate) async fn create_user(db: &Pool, new: NewUser) -> Result<User> {
    let mut conn = db.acquire().await?;
    insert_user(&mut conn, &new).await
}

/// Inserts an account on `conn` (a transaction of the caller's, or one
/// statement of its own). `Conflict` if the username key is taken.
pub(crate) async fn insert_user(conn: &mut Conn, new: &NewUser) -> Result<User> {
    let row = dialect::query(&format!(
        "INSERT INTO users (username, username_key, display_name, password_hash, created_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
    ))
    .bind(&new.username)
    .bind(&new.username_key)
    .bind(&new.display_name)
    .bind(&new.password_hash)
    .bind(new.now)
    .fetch_one(&mut *conn)
    .await?;
    rows::user(&row)
}

pub(crate) async fn credentials_by_username(
    db: &Pool,
    key: &str,
) -> Result<Option<UserCredentials>> {
    let row = dialect::query(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username_key = $1"
    ))
    .bind(key)
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        Ok(UserCredentials {
            user: rows::user(&row)?,
            password_hash: row.try_get("password_hash")?,
        })
    })
    .transpose()
}

pub(crate) async fn user(db: &Pool, id: UserId) -> Result<Option<User>> {
    let row = dialect::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(rows::user).transpose()
}

pub(crate) async fn users(db: &Pool, ids: &[UserId]) -> Result<Vec<User>> {
    let rows = dialect::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {} ORDER BY id",
        dialect::in_ids("id", "$1")
    ))
    .bind(dialect::id_list(ids)?)
    .fetch_all(db)
    .await?;
    rows.iter().map(rows::user).collect()
}

pub(crate) async fn search_users(db: &Pool, prefix: &str, limit: u32) -> Result<Vec<User>> {
    // Range scan on the unique index instead of LIKE, so '_' and '%' in the
    // prefix mean themselves. `username_key` sorts bytewise (COLLATE "C"),
    // and usernames are ASCII, so U+FFFF sorts after all.
    let upper = format!("{prefix}\u{ffff}");
    let rows = dialect::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username_key >= $1 AND username_key < $2
         ORDER BY username_key LIMIT $3"
    ))
    .bind(prefix)
    .bind(upper)
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?;
    rows.iter().map(rows::user).collect()
}

pub(crate) async fn update_profile(
    db: &Pool,
    id: UserId,
    update: ProfileUpdate,
) -> Result<Option<User>> {
    // Each field: keep when not given; the flag parameters say which to set.
    let row = dialect::query(&format!(
        "UPDATE users SET
            display_name    = CASE WHEN $1 THEN $2 ELSE display_name END,
            avatar_media_id = CASE WHEN $3 THEN $4 ELSE avatar_media_id END,
            status_text     = CASE WHEN $5 THEN $6 ELSE status_text END,
            hide_presence   = CASE WHEN $8 THEN $9 ELSE hide_presence END
         WHERE id = $7 RETURNING {USER_COLUMNS}"
    ))
    .bind(update.display_name.is_some())
    .bind(update.display_name)
    .bind(update.avatar_media_id.is_some())
    .bind(update.avatar_media_id.flatten())
    .bind(update.status_text.is_some())
    .bind(update.status_text.flatten())
    .bind(id)
    .bind(update.hide_presence.is_some())
    .bind(update.hide_presence.unwrap_or(false))
    .fetch_optional(db)
    .await?;
    row.as_ref().map(rows::user).transpose()
}

pub(crate) async fn create_device(
    db: &Pool,
    user_id: UserId,
    name: Option<String>,
    public_key: Option<String>,
    now: Millis,
) -> Result<DeviceId> {
    let id = dialect::query_scalar(
        "INSERT INTO devices (user_id, name, public_key, created_at) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(user_id)
    .bind(name)
    .bind(public_key)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(id)
}

pub(crate) use super::dialect::insert_tokens;

pub(crate) async fn access_token_owner(
    db: &Pool,
    hash: &[u8],
    now: Millis,
) -> Result<Option<TokenOwner>> {
    let row: Option<(i64, i64)> = dialect::query_as(
        "SELECT d.user_id, d.id FROM tokens t JOIN devices d ON d.id = t.device_id
         WHERE t.hash = $1 AND t.kind = $2 AND t.expires_at > $3 AND d.revoked_at IS NULL",
    )
    .bind(hash)
    .bind(dialect::token_kind(TokenKind::Access))
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(user_id, device_id)| TokenOwner { user_id, device_id }))
}

pub(crate) async fn spend_refresh_token(
    db: &Pool,
    hash: &[u8],
    now: Millis,
) -> Result<RefreshOutcome> {
    let mut tx = dialect::begin_write(db).await?;
    /// user id, device id, expires_at, spent_at, revoked_at
    type RefreshRow = (i64, i64, i64, Option<i64>, Option<i64>);
    // FOR UPDATE (PostgreSQL): two nodes spending the same token at once are
    // serialised, and the second sees it spent (a replay), as with SQLite's
    // one writer.
    let row: Option<RefreshRow> = dialect::query_as(&format!(
        "SELECT d.user_id, d.id, t.expires_at, t.spent_at, d.revoked_at
         FROM tokens t JOIN devices d ON d.id = t.device_id WHERE t.hash = $1 AND t.kind = $2
         {}",
        dialect::for_update_of("t")
    ))
    .bind(hash)
    .bind(dialect::token_kind(TokenKind::Refresh))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((user_id, device_id, expires_at, spent_at, revoked_at)) = row else {
        return Ok(RefreshOutcome::Invalid);
    };
    let owner = TokenOwner { user_id, device_id };
    if expires_at <= now {
        return Ok(RefreshOutcome::Invalid);
    }
    if spent_at.is_some() {
        revoke_device_in(&mut tx, device_id, now).await?;
        tx.commit().await?;
        return Ok(RefreshOutcome::Reused(owner));
    }
    if revoked_at.is_some() {
        return Ok(RefreshOutcome::Invalid);
    }
    dialect::query("UPDATE tokens SET spent_at = $1 WHERE hash = $2")
        .bind(now)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    // The access tokens issued with the spent refresh token end here too.
    dialect::query("DELETE FROM tokens WHERE device_id = $1 AND kind = $2")
        .bind(device_id)
        .bind(dialect::token_kind(TokenKind::Access))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(RefreshOutcome::Fresh(owner))
}

pub(crate) async fn revoke_device(db: &Pool, device_id: DeviceId, now: Millis) -> Result<()> {
    let mut tx = dialect::begin_write(db).await?;
    revoke_device_in(&mut tx, device_id, now).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn change_password(
    db: &Pool,
    user: UserId,
    password_hash: &str,
    keep_device: DeviceId,
    now: Millis,
) -> Result<()> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    let others: Vec<i64> = dialect::query_scalar(
        "SELECT id FROM devices WHERE user_id = $1 AND id != $2 AND revoked_at IS NULL
         ORDER BY id",
    )
    .bind(user)
    .bind(keep_device)
    .fetch_all(&mut *tx)
    .await?;
    for device in others {
        revoke_device_in(&mut tx, device, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn revoke_device_in(tx: &mut Conn, device_id: DeviceId, now: Millis) -> Result<()> {
    // Spent refresh tokens of a revoked device are kept (until they expire)
    // only so that a replay is still recognised; fresh ones go.
    dialect::query("DELETE FROM tokens WHERE device_id = $1 AND (kind = $2 OR spent_at IS NULL)")
        .bind(device_id)
        .bind(dialect::token_kind(TokenKind::Access))
        .execute(&mut *tx)
        .await?;
    dialect::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .bind(now)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
