//! Conversations on PostgreSQL: the two creating writes, which insert all
//! members in one `UNNEST` statement and settle a race for the same direct
//! pair with `ON CONFLICT`. Everything else (the reads, and the decisions
//! the writes share) is `shared` (`src/shared/conversations.rs`), written
//! once for both backends.

use confab_proto::{ConversationId, UserId};

use super::dialect::{self, Pool};
use super::rows::{self, role_name};
use crate::types::*;
use crate::Result;

#[path = "../shared/conversations.rs"]
mod shared;

pub(crate) use shared::*;

pub(crate) async fn get_or_create_direct(
    db: &Pool,
    a: UserId,
    b: UserId,
    encrypted: bool,
    now: Millis,
) -> Result<(ConversationId, bool)> {
    let key = direct_key(a, b, encrypted);
    let existing = direct_id(db, &key).await?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let users = direct_users(a, b);
    let mut tx = dialect::begin_write(db).await?;
    // Another node may be making the same pair right now: ON CONFLICT waits
    // for its transaction and, if it committed, inserts nothing.
    let made: Option<i64> = sqlx::query_scalar(
        "INSERT INTO conversations (kind, direct_key, created_by, created_at, member_count, encrypted)
         VALUES ('direct', $1, $2, $3, $4, $5)
         ON CONFLICT (direct_key) DO NOTHING RETURNING id",
    )
    .bind(&key)
    .bind(a)
    .bind(now)
    .bind(users.len() as i64)
    .bind(encrypted)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = made else {
        tx.rollback().await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM conversations WHERE direct_key = $1")
            .bind(&key)
            .fetch_one(db)
            .await?;
        return Ok((id, false));
    };
    sqlx::query(
        "INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at)
         SELECT $1, u, 'member', 0, $3 FROM UNNEST($2::bigint[]) AS u",
    )
    .bind(id)
    .bind(&users)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, true))
}

pub(crate) async fn create_group(
    db: &Pool,
    owner: UserId,
    title: &str,
    members: &[UserId],
    encrypted: bool,
    now: Millis,
) -> Result<ConversationId> {
    let all = group_roster(owner, members);
    let users: Vec<UserId> = all.iter().map(|(u, _)| *u).collect();
    let roles: Vec<&str> = all.iter().map(|(_, r)| role_name(*r)).collect();
    let mut tx = dialect::begin_write(db).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO conversations (kind, title, created_by, created_at, member_count, encrypted)
         VALUES ('group', $1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(title)
    .bind(owner)
    .bind(now)
    .bind(all.len() as i64)
    .bind(encrypted)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at)
         SELECT $1, u.id, u.role, 0, $4 FROM UNNEST($2::bigint[], $3::text[]) AS u(id, role)",
    )
    .bind(id)
    .bind(&users)
    .bind(&roles)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    group_created(&mut tx, id, owner, title, now).await?;
    tx.commit().await?;
    Ok(id)
}
