//! Media records, per-user usage and the media access rule.

use confab_proto::{MessageKind, UserId};
use sqlx::{Row, SqlitePool};

use crate::types::*;
use crate::{Result, StoreError};

const COLUMNS: &str =
    "id, owner_id, sha256, size, mime, kind, width, height, duration_ms, thumbnail, created_at";

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<MediaRecord> {
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
        thumbnail: row.try_get::<i64, _>("thumbnail")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn insert_media(
    db: &SqlitePool,
    m: &MediaRecord,
    quota_bytes: i64,
) -> Result<MediaInsert> {
    // One statement: the quota check and the insert are atomic (and the
    // single writer connection serialises uploads anyway).
    let done = sqlx::query(
        "INSERT INTO media (id, owner_id, sha256, size, mime, kind, width, height, duration_ms,
                            thumbnail, created_at)
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
         WHERE (SELECT COALESCE(SUM(size), 0) FROM media WHERE owner_id = ?) + ? <= ?",
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
    .bind(m.thumbnail as i64)
    .bind(m.created_at)
    .bind(m.owner_id)
    .bind(m.size)
    .bind(quota_bytes)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        Ok(MediaInsert::Stored)
    } else {
        Ok(MediaInsert::OverQuota {
            used: media_usage(db, m.owner_id).await?,
        })
    }
}

pub(crate) async fn media(db: &SqlitePool, id: &str) -> Result<Option<MediaRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM media WHERE id = ?");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(|r| record(&r))
        .transpose()
}

pub(crate) async fn media_usage(db: &SqlitePool, owner: UserId) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(SUM(size), 0) FROM media WHERE owner_id = ?")
            .bind(owner)
            .fetch_one(db)
            .await?,
    )
}

pub(crate) async fn can_read_media(db: &SqlitePool, id: &str, user: UserId) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM media WHERE id = ?1 AND owner_id = ?2
         UNION ALL
         SELECT 1 FROM message_media mm
           JOIN members m ON m.conversation_id = mm.conversation_id AND m.user_id = ?2
          WHERE mm.media_id = ?1 AND m.joined_seq < mm.seq
         LIMIT 1",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    Ok(hit.is_some())
}

pub(crate) async fn set_media_thumbnail(db: &SqlitePool, id: &str) -> Result<()> {
    sqlx::query("UPDATE media SET thumbnail = 1 WHERE id = ?")
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
