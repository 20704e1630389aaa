//! Friends, friend requests, blocks and presence bookkeeping.

use std::collections::HashMap;

use confab_proto::api::{FriendRequest, User};
use confab_proto::UserId;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::rows::{self, USER_COLUMNS};
use crate::types::*;
use crate::Result;

/// A request row joined with both users' profiles.
const REQUEST_SQL: &str = "SELECT r.id AS rid, r.message, r.created_at AS rcreated,
        f.id AS f_id, f.username AS f_username, f.display_name AS f_display_name,
        f.avatar_media_id AS f_avatar_media_id, f.status_text AS f_status_text,
        f.created_at AS f_created_at,
        t.id AS t_id, t.username AS t_username, t.display_name AS t_display_name,
        t.avatar_media_id AS t_avatar_media_id, t.status_text AS t_status_text,
        t.created_at AS t_created_at
     FROM friend_requests r JOIN users f ON f.id = r.from_user JOIN users t ON t.id = r.to_user";

fn prefixed_user(row: &sqlx::sqlite::SqliteRow, p: &str) -> Result<User> {
    Ok(User {
        id: row.try_get(format!("{p}id").as_str())?,
        username: row.try_get(format!("{p}username").as_str())?,
        display_name: row.try_get(format!("{p}display_name").as_str())?,
        avatar_media_id: row.try_get(format!("{p}avatar_media_id").as_str())?,
        status_text: row.try_get(format!("{p}status_text").as_str())?,
        created_at: row.try_get(format!("{p}created_at").as_str())?,
        hide_presence: None,
    })
}

fn request(row: &sqlx::sqlite::SqliteRow) -> Result<FriendRequest> {
    Ok(FriendRequest {
        id: row.try_get("rid")?,
        from_user: prefixed_user(row, "f_")?,
        to_user: prefixed_user(row, "t_")?,
        message: row.try_get("message")?,
        created_at: row.try_get("rcreated")?,
    })
}

async fn request_by_id(tx: &mut SqliteConnection, id: i64) -> Result<Option<FriendRequest>> {
    let row = sqlx::query(&format!("{REQUEST_SQL} WHERE r.id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(request).transpose()
}

async fn blocked_either_on(tx: &mut SqliteConnection, a: UserId, b: UserId) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2)
                                 OR (blocker_id = ?2 AND blocked_id = ?1) LIMIT 1",
    )
    .bind(a)
    .bind(b)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(hit.is_some())
}

async fn are_friends(tx: &mut SqliteConnection, a: UserId, b: UserId) -> Result<bool> {
    let hit: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM friendships WHERE user_id = ? AND friend_id = ?")
            .bind(a)
            .bind(b)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(hit.is_some())
}

/// Makes `a` and `b` friends and deletes requests between them.
async fn befriend(tx: &mut SqliteConnection, a: UserId, b: UserId, now: Millis) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO friendships (user_id, friend_id, since) VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
    )
    .bind(a)
    .bind(b)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    delete_requests_between(tx, a, b).await
}

async fn delete_requests_between(tx: &mut SqliteConnection, a: UserId, b: UserId) -> Result<()> {
    sqlx::query(
        "DELETE FROM friend_requests WHERE (from_user = ?1 AND to_user = ?2)
                                        OR (from_user = ?2 AND to_user = ?1)",
    )
    .bind(a)
    .bind(b)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn send_friend_request(
    db: &SqlitePool,
    from: UserId,
    to: UserId,
    message: Option<String>,
    max_pending: u32,
    now: Millis,
) -> Result<FriendRequestOutcome> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?")
        .bind(to)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(FriendRequestOutcome::UnknownUser);
    }
    if blocked_either_on(&mut tx, from, to).await? {
        return Ok(FriendRequestOutcome::Blocked);
    }
    if are_friends(&mut tx, from, to).await? {
        return Ok(FriendRequestOutcome::AlreadyFriends);
    }
    // They asked first: this answers their request.
    let theirs: Option<i64> =
        sqlx::query_scalar("SELECT id FROM friend_requests WHERE from_user = ? AND to_user = ?")
            .bind(to)
            .bind(from)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = theirs {
        let Some(request) = request_by_id(&mut tx, id).await? else {
            return Ok(FriendRequestOutcome::UnknownUser);
        };
        befriend(&mut tx, from, to, now).await?;
        tx.commit().await?;
        return Ok(FriendRequestOutcome::Accepted {
            request,
            since: now,
        });
    }
    let mine: Option<i64> =
        sqlx::query_scalar("SELECT id FROM friend_requests WHERE from_user = ? AND to_user = ?")
            .bind(from)
            .bind(to)
            .fetch_optional(&mut *tx)
            .await?;
    let id = match mine {
        Some(id) => id,
        None => {
            let pending: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM friend_requests WHERE from_user = ?")
                    .bind(from)
                    .fetch_one(&mut *tx)
                    .await?;
            if pending >= i64::from(max_pending) {
                return Ok(FriendRequestOutcome::TooMany);
            }
            sqlx::query_scalar(
                "INSERT INTO friend_requests (from_user, to_user, message, created_at)
                 VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(from)
            .bind(to)
            .bind(message)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let request = request_by_id(&mut tx, id).await?;
    tx.commit().await?;
    Ok(match request {
        Some(r) => FriendRequestOutcome::Pending(r),
        None => FriendRequestOutcome::UnknownUser,
    })
}

pub(crate) async fn friend_requests(
    db: &SqlitePool,
    user: UserId,
    incoming: bool,
) -> Result<Vec<FriendRequest>> {
    let column = if incoming { "to_user" } else { "from_user" };
    let rows = sqlx::query(&format!(
        "{REQUEST_SQL} WHERE r.{column} = ? ORDER BY r.created_at, r.id"
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter().map(request).collect()
}

pub(crate) async fn answer_friend_request(
    db: &SqlitePool,
    id: i64,
    user: UserId,
    accept: bool,
    now: Millis,
) -> Result<FriendAnswer> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let Some(request) = request_by_id(&mut tx, id).await? else {
        return Ok(FriendAnswer::NotFound);
    };
    if request.to_user.id != user {
        return Ok(FriendAnswer::NotFound);
    }
    if accept {
        befriend(&mut tx, request.from_user.id, user, now).await?;
    } else {
        sqlx::query("DELETE FROM friend_requests WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(if accept {
        FriendAnswer::Accepted {
            request,
            since: now,
        }
    } else {
        FriendAnswer::Declined(request)
    })
}

pub(crate) async fn cancel_friend_request(db: &SqlitePool, id: i64, user: UserId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM friend_requests WHERE id = ? AND from_user = ?")
        .bind(id)
        .bind(user)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn friends(db: &SqlitePool, user: UserId) -> Result<Vec<(User, Millis)>> {
    let columns = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns}, f.since FROM friendships f JOIN users u ON u.id = f.friend_id
         WHERE f.user_id = ? ORDER BY u.username_key"
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((rows::user(r)?, r.try_get("since")?)))
        .collect()
}

pub(crate) async fn friend_ids(db: &SqlitePool, user: UserId) -> Result<Vec<UserId>> {
    Ok(
        sqlx::query_scalar("SELECT friend_id FROM friendships WHERE user_id = ?")
            .bind(user)
            .fetch_all(db)
            .await?,
    )
}

async fn unfriend_on(tx: &mut SqliteConnection, a: UserId, b: UserId) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM friendships WHERE (user_id = ?1 AND friend_id = ?2)
                                    OR (user_id = ?2 AND friend_id = ?1)",
    )
    .bind(a)
    .bind(b)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn unfriend(db: &SqlitePool, a: UserId, b: UserId) -> Result<bool> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let ended = unfriend_on(&mut tx, a, b).await?;
    tx.commit().await?;
    Ok(ended)
}

pub(crate) async fn block(
    db: &SqlitePool,
    blocker: UserId,
    blocked: UserId,
    now: Millis,
) -> Result<bool> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, created_at) VALUES (?, ?, ?)",
    )
    .bind(blocker)
    .bind(blocked)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let ended = unfriend_on(&mut tx, blocker, blocked).await?;
    delete_requests_between(&mut tx, blocker, blocked).await?;
    tx.commit().await?;
    Ok(ended)
}

pub(crate) async fn unblock(db: &SqlitePool, blocker: UserId, blocked: UserId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?")
        .bind(blocker)
        .bind(blocked)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn blocked_users(db: &SqlitePool, blocker: UserId) -> Result<Vec<User>> {
    let columns = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM blocks b JOIN users u ON u.id = b.blocked_id
         WHERE b.blocker_id = ? ORDER BY b.created_at DESC, u.id DESC"
    ))
    .bind(blocker)
    .fetch_all(db)
    .await?;
    rows.iter().map(rows::user).collect()
}

pub(crate) async fn blocked_either(db: &SqlitePool, a: UserId, b: UserId) -> Result<bool> {
    let mut conn = db.acquire().await?;
    blocked_either_on(&mut conn, a, b).await
}

pub(crate) async fn blocks_among(
    db: &SqlitePool,
    user: UserId,
    others: &[UserId],
) -> Result<Vec<UserId>> {
    let mut out = Vec::new();
    for chunk in others.chunks(400) {
        let ids =
            serde_json::to_string(chunk).map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
        let hits: Vec<UserId> = sqlx::query_scalar(
            "SELECT blocked_id FROM blocks WHERE blocker_id = ?1
                 AND blocked_id IN (SELECT value FROM json_each(?2))
             UNION
             SELECT blocker_id FROM blocks WHERE blocked_id = ?1
                 AND blocker_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(user)
        .bind(ids)
        .fetch_all(db)
        .await?;
        out.extend(hits);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub(crate) async fn share_conversation(db: &SqlitePool, a: UserId, b: UserId) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM members m1 JOIN members m2 ON m2.conversation_id = m1.conversation_id
         WHERE m1.user_id = ? AND m2.user_id = ? LIMIT 1",
    )
    .bind(a)
    .bind(b)
    .fetch_optional(db)
    .await?;
    Ok(hit.is_some())
}

pub(crate) async fn presence_records(
    db: &SqlitePool,
    users: &[UserId],
) -> Result<HashMap<UserId, PresenceRecord>> {
    let mut out = HashMap::with_capacity(users.len());
    for chunk in users.chunks(500) {
        let mut q: sqlx::QueryBuilder<sqlx::Sqlite> =
            sqlx::QueryBuilder::new("SELECT id, hide_presence, last_seen FROM users WHERE id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        for row in q.build().fetch_all(db).await? {
            let hidden: bool = row.try_get(1)?;
            out.insert(
                row.try_get(0)?,
                PresenceRecord {
                    hidden,
                    last_seen: row.try_get(2)?,
                },
            );
        }
    }
    Ok(out)
}

pub(crate) async fn set_last_seen(db: &SqlitePool, user: UserId, at: Millis) -> Result<()> {
    sqlx::query("UPDATE users SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?")
        .bind(at)
        .bind(user)
        .execute(db)
        .await?;
    Ok(())
}
