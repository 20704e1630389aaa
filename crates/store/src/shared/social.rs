//! Friends, friend requests, blocks and presence bookkeeping.
//!
//! Shared by both backends: compiled once as `sqlite::social` and once as
//! `postgres::social`; the pool and row types and the SQL that differs by
//! dialect come from each backend's `dialect` module.
//!
//! SQLite runs every write on one connection, so these read-then-write
//! operations never interleave there. On PostgreSQL several nodes may run
//! them at once, so each one that reads before it writes first locks the
//! two users' rows ([`dialect::lock_users`], a no-op on SQLite): crossing
//! friend requests, an accept racing a block, and so on are serialised per
//! pair of users.

use std::collections::HashMap;

use confab_proto::api::{FriendRequest, User};
use confab_proto::UserId;

use super::dialect::{self, Conn, DbRow, Pool, Row};
use super::rows::{self, user_columns};
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

fn prefixed_user(row: &DbRow, p: &str) -> Result<User> {
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

fn request(row: &DbRow) -> Result<FriendRequest> {
    Ok(FriendRequest {
        id: row.try_get("rid")?,
        from_user: prefixed_user(row, "f_")?,
        to_user: prefixed_user(row, "t_")?,
        message: row.try_get("message")?,
        created_at: row.try_get("rcreated")?,
    })
}

async fn request_by_id(tx: &mut Conn, id: i64) -> Result<Option<FriendRequest>> {
    let row = dialect::query(&format!("{REQUEST_SQL} WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(request).transpose()
}

async fn blocked_either_on(tx: &mut Conn, a: UserId, b: UserId) -> Result<bool> {
    Ok(dialect::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id = $1 AND blocked_id = $2)
                                                OR (blocker_id = $2 AND blocked_id = $1))",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&mut *tx)
    .await?)
}

async fn are_friends(tx: &mut Conn, a: UserId, b: UserId) -> Result<bool> {
    Ok(dialect::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM friendships WHERE user_id = $1 AND friend_id = $2)",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&mut *tx)
    .await?)
}

/// Makes `a` and `b` friends and deletes requests between them.
async fn befriend(tx: &mut Conn, a: UserId, b: UserId, now: Millis) -> Result<()> {
    dialect::query(
        "INSERT INTO friendships (user_id, friend_id, since) VALUES ($1, $2, $3), ($2, $1, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(a)
    .bind(b)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    delete_requests_between(tx, a, b).await
}

async fn delete_requests_between(tx: &mut Conn, a: UserId, b: UserId) -> Result<()> {
    dialect::query(
        "DELETE FROM friend_requests WHERE (from_user = $1 AND to_user = $2)
                                        OR (from_user = $2 AND to_user = $1)",
    )
    .bind(a)
    .bind(b)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn send_friend_request(
    db: &Pool,
    from: UserId,
    to: UserId,
    message: Option<String>,
    max_pending: u32,
    now: Millis,
) -> Result<FriendRequestOutcome> {
    let mut tx = dialect::begin_write(db).await?;
    let exists: bool = dialect::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(FriendRequestOutcome::UnknownUser);
    }
    dialect::lock_users(&mut tx, &[from, to]).await?;
    if blocked_either_on(&mut tx, from, to).await? {
        return Ok(FriendRequestOutcome::Blocked);
    }
    if are_friends(&mut tx, from, to).await? {
        return Ok(FriendRequestOutcome::AlreadyFriends);
    }
    // They asked first: this answers their request.
    let theirs: Option<i64> = dialect::query_scalar(
        "SELECT id FROM friend_requests WHERE from_user = $1 AND to_user = $2",
    )
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
    let mine: Option<i64> = dialect::query_scalar(
        "SELECT id FROM friend_requests WHERE from_user = $1 AND to_user = $2",
    )
    .bind(from)
    .bind(to)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match mine {
        Some(id) => id,
        None => {
            let pending: i64 =
                dialect::query_scalar("SELECT COUNT(*) FROM friend_requests WHERE from_user = $1")
                    .bind(from)
                    .fetch_one(&mut *tx)
                    .await?;
            if pending >= i64::from(max_pending) {
                return Ok(FriendRequestOutcome::TooMany);
            }
            dialect::query_scalar(
                "INSERT INTO friend_requests (from_user, to_user, message, created_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
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
    db: &Pool,
    user: UserId,
    incoming: bool,
) -> Result<Vec<FriendRequest>> {
    let column = if incoming { "to_user" } else { "from_user" };
    let rows = dialect::query(&format!(
        "{REQUEST_SQL} WHERE r.{column} = $1 ORDER BY r.created_at, r.id"
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter().map(request).collect()
}

pub(crate) async fn answer_friend_request(
    db: &Pool,
    id: i64,
    user: UserId,
    accept: bool,
    now: Millis,
) -> Result<FriendAnswer> {
    let mut tx = dialect::begin_write(db).await?;
    let from: Option<i64> = dialect::query_scalar(
        "SELECT from_user FROM friend_requests WHERE id = $1 AND to_user = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(from) = from else {
        return Ok(FriendAnswer::NotFound);
    };
    dialect::lock_users(&mut tx, &[from, user]).await?;
    // Read it again under the lock: a block or a cancel may have won.
    let Some(request) = request_by_id(&mut tx, id).await? else {
        return Ok(FriendAnswer::NotFound);
    };
    if request.to_user.id != user {
        return Ok(FriendAnswer::NotFound);
    }
    if accept {
        befriend(&mut tx, request.from_user.id, user, now).await?;
    } else {
        dialect::query("DELETE FROM friend_requests WHERE id = $1")
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

pub(crate) async fn cancel_friend_request(db: &Pool, id: i64, user: UserId) -> Result<bool> {
    let mut tx = dialect::begin_write(db).await?;
    let to: Option<i64> = dialect::query_scalar(
        "SELECT to_user FROM friend_requests WHERE id = $1 AND from_user = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(to) = to else {
        return Ok(false);
    };
    dialect::lock_users(&mut tx, &[to, user]).await?;
    let done = dialect::query("DELETE FROM friend_requests WHERE id = $1 AND from_user = $2")
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn friends(db: &Pool, user: UserId) -> Result<Vec<(User, Millis)>> {
    let rows = dialect::query(&format!(
        "SELECT {}, f.since FROM friendships f JOIN users u ON u.id = f.friend_id
         WHERE f.user_id = $1 ORDER BY u.username_key",
        user_columns("u")
    ))
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((rows::user(r)?, r.try_get("since")?)))
        .collect()
}

pub(crate) async fn friend_ids(db: &Pool, user: UserId) -> Result<Vec<UserId>> {
    Ok(dialect::query_scalar(
        "SELECT friend_id FROM friendships WHERE user_id = $1 ORDER BY friend_id",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

async fn unfriend_on(tx: &mut Conn, a: UserId, b: UserId) -> Result<bool> {
    let done = dialect::query(
        "DELETE FROM friendships WHERE (user_id = $1 AND friend_id = $2)
                                    OR (user_id = $2 AND friend_id = $1)",
    )
    .bind(a)
    .bind(b)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn unfriend(db: &Pool, a: UserId, b: UserId) -> Result<bool> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::lock_users(&mut tx, &[a, b]).await?;
    let ended = unfriend_on(&mut tx, a, b).await?;
    tx.commit().await?;
    Ok(ended)
}

pub(crate) async fn block(
    db: &Pool,
    blocker: UserId,
    blocked: UserId,
    now: Millis,
) -> Result<bool> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::lock_users(&mut tx, &[blocker, blocked]).await?;
    dialect::query(
        "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
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

pub(crate) async fn unblock(db: &Pool, blocker: UserId, blocked: UserId) -> Result<bool> {
    let done = dialect::query("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn blocked_users(db: &Pool, blocker: UserId) -> Result<Vec<User>> {
    let rows = dialect::query(&format!(
        "SELECT {} FROM blocks b JOIN users u ON u.id = b.blocked_id
         WHERE b.blocker_id = $1 ORDER BY b.created_at DESC, u.id DESC",
        user_columns("u")
    ))
    .bind(blocker)
    .fetch_all(db)
    .await?;
    rows.iter().map(rows::user).collect()
}

pub(crate) async fn blocked_either(db: &Pool, a: UserId, b: UserId) -> Result<bool> {
    let mut conn = db.acquire().await?;
    blocked_either_on(&mut conn, a, b).await
}

pub(crate) async fn blocks_among(
    db: &Pool,
    user: UserId,
    others: &[UserId],
) -> Result<Vec<UserId>> {
    let mut out: Vec<UserId> = dialect::query_scalar(&format!(
        "SELECT blocked_id FROM blocks WHERE blocker_id = $1 AND {}
         UNION
         SELECT blocker_id FROM blocks WHERE blocked_id = $1 AND {}",
        dialect::in_ids("blocked_id", "$2"),
        dialect::in_ids("blocker_id", "$2"),
    ))
    .bind(user)
    .bind(dialect::id_list(others)?)
    .fetch_all(db)
    .await?;
    out.sort_unstable();
    Ok(out)
}

pub(crate) async fn share_conversation(db: &Pool, a: UserId, b: UserId) -> Result<bool> {
    Ok(dialect::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members m1 JOIN members m2
                        ON m2.conversation_id = m1.conversation_id
                        WHERE m1.user_id = $1 AND m2.user_id = $2)",
    )
    .bind(a)
    .bind(b)
    .fetch_one(db)
    .await?)
}

pub(crate) async fn presence_records(
    db: &Pool,
    users: &[UserId],
) -> Result<HashMap<UserId, PresenceRecord>> {
    let mut out = HashMap::with_capacity(users.len());
    if users.is_empty() {
        return Ok(out);
    }
    let rows = dialect::query(&format!(
        "SELECT id, hide_presence, last_seen FROM users WHERE {}",
        dialect::in_ids("id", "$1")
    ))
    .bind(dialect::id_list(users)?)
    .fetch_all(db)
    .await?;
    for row in rows {
        out.insert(
            row.try_get(0)?,
            PresenceRecord {
                hidden: row.try_get(1)?,
                last_seen: row.try_get(2)?,
            },
        );
    }
    Ok(out)
}

pub(crate) async fn set_last_seen(db: &Pool, user: UserId, at: Millis) -> Result<()> {
    dialect::query(&format!(
        "UPDATE users SET last_seen = {}(COALESCE(last_seen, 0), $1) WHERE id = $2",
        dialect::GREATEST
    ))
    .bind(at)
    .bind(user)
    .execute(db)
    .await?;
    Ok(())
}
