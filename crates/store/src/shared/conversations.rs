//! Conversations, membership, history pages and sync reads.
//!
//! Shared by both backends: compiled once as `sqlite::conversations::shared`
//! and once as `postgres::conversations::shared` (re-exported by those
//! modules, which keep only the two creating writes whose SQL differs); the
//! pool and row types come from each backend's `dialect` module.

use std::collections::HashMap;

use confab_proto::api::{Conversation, ConversationKind, Member, Role, MEMBERS_INLINE_MAX};
use confab_proto::{ConversationId, MessageKind, MessageRecord, Seq, UserId};

use super::dialect::{self, Conn, DbRow, Pool, Row};
use super::rows::{self, MESSAGE_COLUMNS};
use crate::types::*;
use crate::{Result, StoreError};

/// The `direct_key` of the direct conversation of `a` and `b`: an encrypted
/// direct conversation is a conversation of its own.
pub(crate) fn direct_key(a: UserId, b: UserId, encrypted: bool) -> String {
    let suffix = if encrypted { ":e" } else { "" };
    format!("{}:{}{suffix}", a.min(b), a.max(b))
}

/// The members of a new direct conversation (one when `a` talks to self).
pub(crate) fn direct_users(a: UserId, b: UserId) -> Vec<UserId> {
    let mut users = vec![a];
    if b != a {
        users.push(b);
    }
    users
}

/// The id of the direct conversation with this `direct_key`, if made.
pub(crate) async fn direct_id(
    db: impl dialect::Executor<'_>,
    key: &str,
) -> Result<Option<ConversationId>> {
    Ok(
        dialect::query_scalar("SELECT id FROM conversations WHERE direct_key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?,
    )
}

/// Appends the `system` notice of a new group (its first message).
pub(crate) async fn group_created(
    tx: &mut Conn,
    id: ConversationId,
    owner: UserId,
    title: &str,
    now: Millis,
) -> Result<()> {
    let body = confab_proto::SystemNotice::GroupCreated {
        by_user_id: owner,
        title: title.to_owned(),
    }
    .to_body();
    super::super::notice::notice(tx, id, owner, body, now).await?;
    Ok(())
}

/// The members of a new group: the owner first, then each other member once.
pub(crate) fn group_roster(owner: UserId, members: &[UserId]) -> Vec<(UserId, Role)> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once((owner, Role::Owner))
        .chain(members.iter().map(|&m| (m, Role::Member)))
        .filter(|(u, _)| seen.insert(*u))
        .collect()
}

pub(crate) async fn member(db: &Pool, id: ConversationId, user: UserId) -> Result<Option<Member>> {
    let row = dialect::query(
        "SELECT user_id, role, joined_seq, read_seq FROM members
         WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(rows::member).transpose()
}

pub(crate) async fn member_ids(db: &Pool, id: ConversationId) -> Result<Vec<UserId>> {
    Ok(dialect::query_scalar(
        "SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(db)
    .await?)
}

/// `unread_count` is exact up to this many; beyond it, it says this many.
pub(crate) const UNREAD_CAP: i64 = 10_000;

/// The conversation row joined with the caller's membership.
struct Header {
    id: ConversationId,
    kind: ConversationKind,
    title: Option<String>,
    avatar_media_id: Option<String>,
    members_can_add: bool,
    member_count: i64,
    last_seq: Seq,
    created_at: Millis,
    read_seq: Seq,
    joined_seq: Seq,
    muted: bool,
    encrypted: bool,
    mls_epoch: i64,
}

const HEADER_SQL: &str =
    "SELECT c.id, c.kind, c.title, c.avatar_media_id, c.members_can_add, c.member_count,
            c.last_seq, c.created_at, m.read_seq, m.joined_seq, m.muted,
            c.encrypted, c.mls_epoch
     FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = $1";

fn header(row: &DbRow) -> Result<Header> {
    let kind: String = row.try_get("kind")?;
    Ok(Header {
        id: row.try_get("id")?,
        kind: match kind.as_str() {
            "direct" => ConversationKind::Direct,
            "group" => ConversationKind::Group,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown conversation kind {other:?}"
                )))
            }
        },
        title: row.try_get("title")?,
        avatar_media_id: row.try_get("avatar_media_id")?,
        members_can_add: row.try_get("members_can_add")?,
        member_count: row.try_get("member_count")?,
        last_seq: row.try_get("last_seq")?,
        created_at: row.try_get("created_at")?,
        read_seq: row.try_get("read_seq")?,
        joined_seq: row.try_get("joined_seq")?,
        muted: row.try_get("muted")?,
        encrypted: row.try_get("encrypted")?,
        mls_epoch: row.try_get("mls_epoch")?,
    })
}

async fn view(db: &Pool, h: Header, user: UserId) -> Result<Conversation> {
    let member_rows = dialect::query(
        "SELECT user_id, role, joined_seq, read_seq FROM members WHERE conversation_id = $1
         ORDER BY user_id LIMIT $2",
    )
    .bind(h.id)
    .bind(MEMBERS_INLINE_MAX as i64)
    .fetch_all(db)
    .await?;
    let members = member_rows
        .iter()
        .map(rows::member)
        .collect::<Result<Vec<_>>>()?;
    let last_message = if h.last_seq > h.joined_seq {
        let row = dialect::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2"
        ))
        .bind(h.id)
        .bind(h.last_seq)
        .fetch_optional(db)
        .await?;
        row.as_ref().map(rows::message).transpose()?
    } else {
        None
    };
    // Counting stops at UNREAD_CAP so a huge backlog costs a bounded scan.
    let unread_count: i64 = dialect::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM messages
         WHERE conversation_id = $1 AND seq > $2 AND sender_id != $3 AND kind != 'system'
         LIMIT $4) AS unread",
    )
    .bind(h.id)
    .bind(h.read_seq.max(h.joined_seq))
    .bind(user)
    .bind(UNREAD_CAP)
    .fetch_one(db)
    .await?;
    let unread_mentions: i64 = dialect::query_scalar(
        "SELECT COUNT(*) FROM mentions WHERE user_id = $1 AND conversation_id = $2 AND seq > $3",
    )
    .bind(user)
    .bind(h.id)
    .bind(h.read_seq.max(h.joined_seq))
    .fetch_one(db)
    .await?;
    Ok(Conversation {
        id: h.id,
        kind: h.kind,
        title: h.title,
        avatar_media_id: h.avatar_media_id,
        members_can_add: h.members_can_add,
        members,
        member_count: h.member_count,
        last_seq: h.last_seq,
        last_message,
        read_seq: h.read_seq,
        unread_count,
        unread_mentions,
        muted: h.muted,
        created_at: h.created_at,
        encrypted: h.encrypted,
        mls_epoch: h.encrypted.then_some(h.mls_epoch.max(0) as u64),
    })
}

pub(crate) async fn conversation_for(
    db: &Pool,
    id: ConversationId,
    user: UserId,
) -> Result<Option<Conversation>> {
    let row = dialect::query(&format!("{HEADER_SQL} AND c.id = $2"))
        .bind(user)
        .bind(id)
        .fetch_optional(db)
        .await?;
    match row {
        Some(row) => Ok(Some(view(db, header(&row)?, user).await?)),
        None => Ok(None),
    }
}

pub(crate) async fn conversations_for(db: &Pool, user: UserId) -> Result<Vec<Conversation>> {
    let headers = dialect::query(HEADER_SQL).bind(user).fetch_all(db).await?;
    let mut out = Vec::with_capacity(headers.len());
    for row in &headers {
        out.push(view(db, header(row)?, user).await?);
    }
    let activity = |c: &Conversation| c.last_message.as_ref().map_or(c.created_at, |m| m.ts);
    out.sort_by(|a, b| activity(b).cmp(&activity(a)).then(b.id.cmp(&a.id)));
    Ok(out)
}

pub(crate) async fn history(
    db: &Pool,
    id: ConversationId,
    user: UserId,
    q: HistoryQuery,
) -> Result<(Vec<MessageRecord>, bool)> {
    let joined: Option<i64> = dialect::query_scalar(
        "SELECT joined_seq FROM members WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?;
    let Some(joined) = joined else {
        return Ok((Vec::new(), false));
    };
    let limit = i64::from(q.limit.max(1));
    let floor = q.after_seq.unwrap_or(0).max(joined);
    let ceiling = q.before_seq.unwrap_or(i64::MAX);
    // Forward paging when after_seq is given, else newest-first.
    let forward = q.after_seq.is_some();
    let order = if forward { "ASC" } else { "DESC" };
    let rows = dialect::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3
         ORDER BY seq {order} LIMIT $4"
    ))
    .bind(id)
    .bind(floor)
    .bind(ceiling)
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let has_more = rows.len() as i64 > limit;
    let mut messages = rows
        .iter()
        .take(limit as usize)
        .map(rows::message)
        .collect::<Result<Vec<_>>>()?;
    if !forward {
        messages.reverse();
    }
    add_read_counts(db, id, user, &mut messages).await?;
    Ok((messages, has_more))
}

/// In groups, marks each of `user`'s own messages with how many other
/// members' read cursors have passed it.
async fn add_read_counts(
    db: &Pool,
    id: ConversationId,
    user: UserId,
    messages: &mut [MessageRecord],
) -> Result<()> {
    if !messages
        .iter()
        .any(|m| m.sender_id == user && m.kind != MessageKind::System)
    {
        return Ok(());
    }
    let kind: Option<String> =
        dialect::query_scalar("SELECT kind FROM conversations WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    if kind.as_deref() != Some("group") {
        return Ok(());
    }
    // (joined_seq, read_seq) of the other members: a member counts for a
    // message when they were in before it and have read past it.
    let cursors: Vec<(Seq, Seq)> = dialect::query_as(
        "SELECT joined_seq, read_seq FROM members WHERE conversation_id = $1 AND user_id != $2",
    )
    .bind(id)
    .bind(user)
    .fetch_all(db)
    .await?;
    for m in messages
        .iter_mut()
        .filter(|m| m.sender_id == user && m.kind != MessageKind::System)
    {
        let n = cursors
            .iter()
            .filter(|&&(joined, read)| joined < m.seq && read >= m.seq)
            .count();
        m.read_by = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(())
}

pub(crate) async fn members(db: &Pool, id: ConversationId) -> Result<Vec<Member>> {
    let rows = dialect::query(
        "SELECT user_id, role, joined_seq, read_seq FROM members WHERE conversation_id = $1
         ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    rows.iter().map(rows::member).collect()
}

pub(crate) async fn was_member(db: &Pool, id: ConversationId, user: UserId) -> Result<bool> {
    Ok(dialect::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM former_members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(id)
    .bind(user)
    .fetch_one(db)
    .await?)
}

pub(crate) async fn audience(
    db: &Pool,
    id: ConversationId,
    user: UserId,
) -> Result<Option<Vec<UserId>>> {
    let mut conn = db.acquire().await?;
    let member: bool = dialect::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(id)
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    if !member {
        return Ok(None);
    }
    let users = dialect::query_scalar(
        "SELECT m.user_id FROM members m WHERE m.conversation_id = $1 AND m.user_id != $2
           AND NOT EXISTS (SELECT 1 FROM blocks b
               WHERE (b.blocker_id = m.user_id AND b.blocked_id = $2)
                  OR (b.blocker_id = $2 AND b.blocked_id = m.user_id))
         ORDER BY m.user_id",
    )
    .bind(id)
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(users))
}

pub(crate) async fn set_muted(
    db: &Pool,
    id: ConversationId,
    user: UserId,
    muted: bool,
) -> Result<bool> {
    let done =
        dialect::query("UPDATE members SET muted = $1 WHERE conversation_id = $2 AND user_id = $3")
            .bind(muted)
            .bind(id)
            .bind(user)
            .execute(db)
            .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn sync(
    db: &Pool,
    user: UserId,
    cursors: &HashMap<ConversationId, Seq>,
    limits: SyncLimits,
) -> Result<Vec<SyncBatch>> {
    let heads: Vec<(i64, i64, i64)> = dialect::query_as(
        "SELECT m.conversation_id, m.joined_seq, c.last_seq
         FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = $1
         ORDER BY m.conversation_id",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    let cap = i64::from(limits.per_conversation.max(1));
    let mut budget = i64::from(limits.total.max(1));
    let mut out = Vec::new();
    for (conversation_id, joined_seq, last_seq) in heads {
        let cursor = cursors.get(&conversation_id).copied().unwrap_or(0);
        let after = cursor.max(joined_seq);
        let floor = (cursor < joined_seq).then_some(joined_seq);
        if last_seq <= after {
            continue;
        }
        if budget <= 0 {
            // Out of room for this answer: say more is waiting.
            out.push(SyncBatch {
                conversation_id,
                messages: Vec::new(),
                has_more: true,
                floor,
            });
            continue;
        }
        let rows = dialect::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3"
        ))
        .bind(conversation_id)
        .bind(after)
        .bind(cap.min(budget))
        .fetch_all(db)
        .await?;
        let messages = rows.iter().map(rows::message).collect::<Result<Vec<_>>>()?;
        budget -= messages.len() as i64;
        let has_more = messages.last().is_some_and(|m| m.seq < last_seq);
        out.push(SyncBatch {
            conversation_id,
            messages,
            has_more,
            floor,
        });
    }
    Ok(out)
}

/// One message as `user` may see it: a member, and the message after
/// their `joined_seq`.
pub(crate) async fn message_for(
    db: &Pool,
    id: ConversationId,
    user: UserId,
    seq: Seq,
) -> Result<Option<MessageRecord>> {
    let row = dialect::query(&format!(
        "SELECT {} FROM messages m JOIN members mb
           ON mb.conversation_id = m.conversation_id AND mb.user_id = $1
         WHERE m.conversation_id = $2 AND m.seq = $3 AND m.seq > mb.joined_seq",
        rows::message_columns("m")
    ))
    .bind(user)
    .bind(id)
    .bind(seq)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(rows::message).transpose()
}
