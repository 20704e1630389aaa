//! Conversations on SQLite: the two creating writes, which insert members
//! row by row (or in multi-row `VALUES` chunks) inside one `IMMEDIATE`
//! transaction. Everything else (the reads, and the decisions the writes
//! share) is `shared` (`src/shared/conversations.rs`), written once for both
//! backends.

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
    let mut tx = dialect::begin_write(db).await?;
    let existing = direct_id(&mut *tx, &key).await?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let users = direct_users(a, b);
    let id: i64 = dialect::query_scalar(
        "INSERT INTO conversations (kind, direct_key, created_by, created_at, member_count, encrypted)
         VALUES ('direct', ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&key)
    .bind(a)
    .bind(now)
    .bind(users.len() as i64)
    .bind(encrypted)
    .fetch_one(&mut *tx)
    .await?;
    for user in users {
        dialect::query(
            "INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at)
             VALUES (?, ?, 'member', 0, ?)",
        )
        .bind(id)
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
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
    let mut tx = dialect::begin_write(db).await?;
    let id: i64 = dialect::query_scalar(
        "INSERT INTO conversations (kind, title, created_by, created_at, encrypted)
         VALUES ('group', ?, ?, ?, ?) RETURNING id",
    )
    .bind(title)
    .bind(owner)
    .bind(now)
    .bind(encrypted)
    .fetch_one(&mut *tx)
    .await?;
    let all = group_roster(owner, members);
    let rows: Vec<(UserId, &'static str)> = all
        .iter()
        .map(|(user, role)| (*user, role_name(*role)))
        .collect();
    tx.run(move |c| {
        let mut st = c.prepare_cached(
            "INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at)
             VALUES (?, ?, ?, 0, ?)",
        )?;
        for (user, role) in rows {
            st.execute((id, user, role, now))?;
        }
        Ok(())
    })
    .await?;
    dialect::query("UPDATE conversations SET member_count = ? WHERE id = ?")
        .bind(all.len() as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    group_created(&mut tx, id, owner, title, now).await?;
    tx.commit().await?;
    Ok(id)
}
