//! Media records, per-user usage and the media access rule.
//!
//! Shared by both backends: compiled once as `sqlite::media` and once as
//! `postgres::media`; the pool and row types and the SQL that differs by
//! dialect come from each backend's `dialect` module.

use confab_proto::{MessageKind, UserId};

use super::dialect::{self, DbRow, Pool, Row};

use crate::types::*;
use crate::{Result, StoreError};

/// A user's usage in bytes (SUM of a BIGINT is a NUMERIC on PostgreSQL).
const USAGE_SQL: &str =
    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media WHERE owner_id = $1";

const COLUMNS: &str =
    "id, owner_id, sha256, size, mime, kind, width, height, duration_ms, thumbnail, created_at";

fn record(row: &DbRow) -> Result<MediaRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(MediaRecord {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        mime: row.try_get("mime")?,
        kind: MediaKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("media kind {kind:?}")))?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        duration_ms: row.try_get("duration_ms")?,
        thumbnail: row.try_get("thumbnail")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn insert_media(
    db: &Pool,
    m: &MediaRecord,
    quota_bytes: i64,
) -> Result<MediaInsert> {
    // The owner's row is locked (PostgreSQL; SQLite's one writer needs no
    // lock) so that two nodes' uploads of the same user cannot both pass the
    // quota check.
    let mut tx = dialect::begin_write(db).await?;
    dialect::lock_row(&mut tx, "users", m.owner_id).await?;
    let used: i64 = dialect::query_scalar(USAGE_SQL)
        .bind(m.owner_id)
        .fetch_one(&mut *tx)
        .await?;
    if used + m.size > quota_bytes {
        return Ok(MediaInsert::OverQuota { used });
    }
    dialect::query(
        "INSERT INTO media (id, owner_id, sha256, size, mime, kind, width, height, duration_ms,
                            thumbnail, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&m.id)
    .bind(m.owner_id)
    .bind(&m.sha256)
    .bind(m.size)
    .bind(&m.mime)
    .bind(m.kind.as_str())
    .bind(m.width)
    .bind(m.height)
    .bind(m.duration_ms)
    .bind(m.thumbnail)
    .bind(m.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(MediaInsert::Stored)
}

pub(crate) async fn media(db: &Pool, id: &str) -> Result<Option<MediaRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM media WHERE id = $1");
    dialect::query(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(|r| record(&r))
        .transpose()
}

pub(crate) async fn media_usage(db: &Pool, owner: UserId) -> Result<i64> {
    Ok(dialect::query_scalar(USAGE_SQL)
        .bind(owner)
        .fetch_one(db)
        .await?)
}

pub(crate) async fn can_read_media(db: &Pool, id: &str, user: UserId) -> Result<bool> {
    // The row is not decoded: `1` is an INT4 on PostgreSQL, an i64 on SQLite.
    let hit = dialect::query(
        "SELECT 1 FROM media WHERE id = $1 AND owner_id = $2
         UNION ALL
         SELECT 1 FROM message_media mm
           JOIN members m ON m.conversation_id = mm.conversation_id AND m.user_id = $2
          WHERE mm.media_id = $1 AND m.joined_seq < mm.seq
         LIMIT 1",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    Ok(hit.is_some())
}

pub(crate) async fn set_media_thumbnail(db: &Pool, id: &str) -> Result<()> {
    dialect::query("UPDATE media SET thumbnail = TRUE WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The `media_id` of an image, voice or file message body.
pub(crate) fn media_id_of(m: &NewMessage) -> Option<String> {
    if !matches!(
        m.kind,
        MessageKind::Image | MessageKind::Voice | MessageKind::File | MessageKind::Encrypted
    ) {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&m.body).ok()?;
    body.get("media_id")?.as_str().map(str::to_owned)
}
