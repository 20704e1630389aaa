//! The group-commit write path: many sends and cursor moves, one transaction.
//!
//! Per batch, whatever its size, this runs a fixed handful of statements:
//! members of the touched conversations (authorisation and recipients), one
//! idempotency lookup, one `UPDATE … RETURNING` that reserves a block of
//! seqs per conversation, one multi-row insert, then the cursor updates.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use confab_proto::api::ConversationKind;
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, Millis, Seq, UserId};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{changes, groups};
use crate::types::*;
use crate::Result;

/// Statement sizes for lists (multi-row INSERT, IN lists, VALUES lists).
/// A batch is cut greedily into pieces of these sizes, so only a handful of
/// distinct SQL texts exist and every one stays in sqlx's statement cache:
/// preparing a fresh 500-row statement per batch costs more than running it.
/// Few pieces per batch matter too: each statement is a round trip to
/// sqlx's SQLite thread.
const PIECES: [usize; 7] = [512, 128, 32, 8, 4, 2, 1];

/// Cuts `items` into slices whose lengths are all in [`PIECES`].
pub(crate) fn pieces<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = PIECES.iter().copied().find(|&p| p <= items.len())?;
        let (head, tail) = items.split_at(n);
        items = tail;
        Some(head)
    })
}

/// What the write path needs to know about each touched conversation.
pub(crate) struct Info {
    pub(crate) kind: ConversationKind,
    pub(crate) members: Arc<[UserId]>,
}

pub(crate) type Members = HashMap<ConversationId, Info>;

pub(crate) async fn commit_batch(
    db: &SqlitePool,
    ops: &[WriteOp],
    rules: CommitRules,
) -> Result<Vec<WriteOutcome>> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; ops.len()];
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    // Group changes split the batch: the plain writes before one see the
    // membership before it, the ones after see it after.
    let mut start = 0;
    for i in 0..=ops.len() {
        let split = match ops.get(i) {
            Some(op @ (WriteOp::Group { .. } | WriteOp::Message { .. })) => Some(op),
            Some(_) => continue,
            None => None,
        };
        if start < i {
            plain_writes(&mut tx, &ops[start..i], &mut out[start..i], rules).await?;
        }
        match split {
            Some(WriteOp::Group { change, ts }) => {
                out[i] = Some(match groups::apply(&mut tx, change, *ts).await? {
                    Ok(done) => WriteOutcome::GroupChanged(done),
                    Err(code) => WriteOutcome::Rejected(code),
                });
            }
            Some(WriteOp::Message { change, ts }) => {
                out[i] = Some(match changes::apply(&mut tx, change, *ts).await? {
                    Ok(done) => WriteOutcome::MessageChanged(Box::new(done)),
                    Err(code) => WriteOutcome::Rejected(code),
                });
            }
            _ => {}
        }
        start = i + 1;
    }
    tx.commit().await?;
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::Rejected(ErrorCode::Internal)))
        .collect())
}

/// Sends and cursor moves: a fixed handful of statements however many.
async fn plain_writes(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let members = load_members(tx, ops).await?;
    append_messages(tx, ops, &members, out, rules).await?;
    move_cursors(tx, ops, &members, out).await?;
    refuse_outsiders(tx, ops, out).await
}

pub(crate) fn conversation_of(op: &WriteOp) -> ConversationId {
    match op {
        WriteOp::Append(m) => m.conversation_id,
        WriteOp::Delivered {
            conversation_id, ..
        }
        | WriteOp::Read {
            conversation_id, ..
        } => *conversation_id,
        WriteOp::Group { change, .. } => change.conversation_id(),
        WriteOp::Message { change, .. } => change.conversation_id(),
    }
}

pub(crate) fn actor_of(op: &WriteOp) -> UserId {
    match op {
        WriteOp::Append(m) => m.sender_id,
        WriteOp::Delivered { user_id, .. } | WriteOp::Read { user_id, .. } => *user_id,
        WriteOp::Group { change, .. } => match change {
            GroupChange::Add { by, .. }
            | GroupChange::Remove { by, .. }
            | GroupChange::SetRole { by, .. }
            | GroupChange::Update { by, .. } => *by,
        },
        WriteOp::Message { change, .. } => change.actor(),
    }
}

/// Ops refused as `NotFound` by a non-member: a former member gets
/// `Forbidden` instead (they know the conversation; they may not use it).
async fn refuse_outsiders(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        if !matches!(out[i], Some(WriteOutcome::Rejected(ErrorCode::NotFound))) {
            continue;
        }
        let former: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?",
        )
        .bind(conversation_of(op))
        .bind(actor_of(op))
        .fetch_optional(&mut *tx)
        .await?;
        if former.is_some() {
            out[i] = Some(WriteOutcome::Rejected(ErrorCode::Forbidden));
        }
    }
    Ok(())
}

async fn load_members(tx: &mut SqliteConnection, ops: &[WriteOp]) -> Result<Members> {
    let ids: Vec<ConversationId> = ops
        .iter()
        .map(conversation_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut grouped: HashMap<ConversationId, Vec<UserId>> = HashMap::new();
    let mut kinds: HashMap<ConversationId, ConversationKind> = HashMap::new();
    for piece in pieces(&ids) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, kind FROM conversations WHERE id IN (");
        let mut list = q.separated(", ");
        for id in piece {
            list.push_bind(*id);
        }
        q.push(")");
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            let id: i64 = row.try_get(0)?;
            let kind: &str = row.try_get(1)?;
            let kind = if kind == "direct" {
                ConversationKind::Direct
            } else {
                ConversationKind::Group
            };
            kinds.insert(id, kind);
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id IN (",
        );
        let mut list = q.separated(", ");
        for id in piece {
            list.push_bind(*id);
        }
        q.push(")");
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            let conv: i64 = row.try_get(0)?;
            let user: i64 = row.try_get(1)?;
            grouped.entry(conv).or_default().push(user);
        }
    }
    Ok(grouped
        .into_iter()
        .map(|(k, v)| {
            let kind = kinds.get(&k).copied().unwrap_or(ConversationKind::Group);
            (
                k,
                Info {
                    kind,
                    members: Arc::from(v),
                },
            )
        })
        .collect())
}

pub(crate) fn is_member(members: &Members, conv: ConversationId, user: UserId) -> Option<&Info> {
    members.get(&conv).filter(|m| m.members.contains(&user))
}

pub(crate) fn members_of(members: &Members, conv: ConversationId) -> Arc<[UserId]> {
    members
        .get(&conv)
        .map(|i| i.members.clone())
        .unwrap_or_else(|| Arc::from(vec![]))
}

/// Pairs of users (sender, other member) of direct conversations.
type Pair = (UserId, UserId);

/// Which of these pairs have a block either way.
async fn blocked_pairs(tx: &mut SqliteConnection, pairs: &[Pair]) -> Result<HashSet<Pair>> {
    let mut hit = HashSet::new();
    for piece in pieces(pairs) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH p(a, b) AS (VALUES ");
        push_pairs(&mut q, piece);
        q.push(
            ") SELECT a, b FROM p WHERE EXISTS (SELECT 1 FROM blocks
               WHERE (blocker_id = p.a AND blocked_id = p.b) OR (blocker_id = p.b AND blocked_id = p.a))",
        );
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            hit.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(hit)
}

/// Which of these pairs are friends.
async fn friend_pairs(tx: &mut SqliteConnection, pairs: &[Pair]) -> Result<HashSet<Pair>> {
    let mut hit = HashSet::new();
    for piece in pieces(pairs) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH p(a, b) AS (VALUES ");
        push_pairs(&mut q, piece);
        q.push(
            ") SELECT p.a, p.b FROM p JOIN friendships f ON f.user_id = p.a AND f.friend_id = p.b",
        );
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            hit.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(hit)
}

fn push_pairs(q: &mut QueryBuilder<Sqlite>, pairs: &[Pair]) {
    let mut list = q.separated(", ");
    for (a, b) in pairs {
        list.push("(");
        list.push_bind_unseparated(*a);
        list.push_unseparated(", ");
        list.push_bind_unseparated(*b);
        list.push_unseparated(")");
    }
}

/// Refuses fresh direct messages between users with a block either way, or
/// (under the friends-only policy) between strangers.
async fn check_direct_rules(
    tx: &mut SqliteConnection,
    fresh: &mut Vec<(usize, &NewMessage)>,
    members: &Members,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let other = |m: &NewMessage| -> Option<UserId> {
        let info = members.get(&m.conversation_id)?;
        if info.kind != ConversationKind::Direct {
            return None;
        }
        info.members.iter().copied().find(|&u| u != m.sender_id)
    };
    let pairs: Vec<Pair> = fresh
        .iter()
        .filter_map(|(_, m)| other(m).map(|o| (m.sender_id, o)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let blocked = blocked_pairs(tx, &pairs).await?;
    let friends = match rules.direct_messages {
        DirectMessagePolicy::Anyone => None,
        DirectMessagePolicy::FriendsOnly => Some(friend_pairs(tx, &pairs).await?),
    };
    fresh.retain(|&(i, m)| {
        let Some(o) = other(m) else { return true };
        let code = if blocked.contains(&(m.sender_id, o)) {
            ErrorCode::Blocked
        } else if friends
            .as_ref()
            .is_some_and(|f| !f.contains(&(m.sender_id, o)))
        {
            ErrorCode::NotFriends
        } else {
            return true;
        };
        out[i] = Some(WriteOutcome::Rejected(code));
        false
    });
    Ok(())
}

async fn append_messages(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    // Authorise, and collect the candidate appends.
    let mut candidates: Vec<(usize, &NewMessage)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let WriteOp::Append(m) = op {
            if is_member(members, m.conversation_id, m.sender_id).is_some() {
                candidates.push((i, m));
            } else {
                out[i] = Some(WriteOutcome::Rejected(ErrorCode::NotFound));
            }
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }

    // Idempotency: what of this is already committed?
    type Key<'a> = (&'a str, UserId, ConversationId);
    let mut committed: HashMap<(String, UserId, ConversationId), (Seq, Millis)> = HashMap::new();
    for piece in pieces(&candidates) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT client_msg_id, sender_id, conversation_id, seq, ts FROM messages WHERE client_msg_id IN (",
        );
        let mut list = q.separated(", ");
        for (_, m) in piece {
            list.push_bind(m.client_msg_id.as_str());
        }
        q.push(")");
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            committed.insert(
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                (row.try_get(3)?, row.try_get(4)?),
            );
        }
    }

    // New messages, in batch order; a repeat inside the batch follows its first.
    let mut fresh: Vec<(usize, &NewMessage)> = Vec::new();
    let mut first_in_batch: HashMap<Key, usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for &(i, m) in &candidates {
        let key: Key = (m.client_msg_id.as_str(), m.sender_id, m.conversation_id);
        let conv_members = members_of(members, m.conversation_id);
        if let Some(&(seq, ts)) =
            committed.get(&(m.client_msg_id.clone(), m.sender_id, m.conversation_id))
        {
            out[i] = Some(WriteOutcome::Appended {
                seq,
                ts,
                duplicate: true,
                members: conv_members,
            });
        } else if let Some(&first) = first_in_batch.get(&key) {
            repeats.push((i, first));
        } else {
            first_in_batch.insert(key, i);
            fresh.push((i, m));
        }
    }
    check_direct_rules(tx, &mut fresh, members, out, rules).await?;
    if fresh.is_empty() {
        resolve_repeats(out, &repeats);
        return Ok(());
    }

    // Reserve a block of seqs per conversation in one statement.
    let mut counts: HashMap<ConversationId, i64> = HashMap::new();
    for (_, m) in &fresh {
        *counts.entry(m.conversation_id).or_default() += 1;
    }
    let count_list: Vec<(ConversationId, i64)> = counts.iter().map(|(k, v)| (*k, *v)).collect();
    let mut next_seq: HashMap<ConversationId, Seq> = HashMap::new();
    for piece in pieces(&count_list) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH v(id, n) AS (VALUES ");
        let mut list = q.separated(", ");
        for (id, n) in piece {
            list.push("(");
            list.push_bind_unseparated(*id);
            list.push_unseparated(", ");
            list.push_bind_unseparated(*n);
            list.push_unseparated(")");
        }
        q.push(
            ") UPDATE conversations SET last_seq = last_seq + v.n FROM v WHERE conversations.id = v.id
             RETURNING conversations.id, conversations.last_seq",
        );
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            let id: i64 = row.try_get(0)?;
            let last: i64 = row.try_get(1)?;
            let n = counts.get(&id).copied().unwrap_or(0);
            next_seq.insert(id, last - n + 1);
        }
    }

    let mut assigned: Vec<(usize, &NewMessage, Seq)> = Vec::with_capacity(fresh.len());
    for (i, m) in fresh {
        let Some(seq) = next_seq.get_mut(&m.conversation_id) else {
            out[i] = Some(WriteOutcome::Rejected(ErrorCode::NotFound));
            continue;
        };
        assigned.push((i, m, *seq));
        *seq += 1;
    }
    for chunk in pieces(&assigned) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts) ",
        );
        q.push_values(chunk, |mut row, (_, m, seq)| {
            row.push_bind(m.conversation_id)
                .push_bind(*seq)
                .push_bind(m.sender_id)
                .push_bind(m.client_msg_id.as_str())
                .push_bind(m.kind.as_str())
                .push_bind(m.body.as_str())
                .push_bind(m.ts);
        });
        q.build().persistent(true).execute(&mut *tx).await?;
    }
    insert_mentions(tx, &assigned, members).await?;
    super::media::insert_message_media(tx, &assigned).await?;
    for (i, m, seq) in assigned {
        let conv_members = members_of(members, m.conversation_id);
        out[i] = Some(WriteOutcome::Appended {
            seq,
            ts: m.ts,
            duplicate: false,
            members: conv_members,
        });
    }
    resolve_repeats(out, &repeats);
    Ok(())
}

/// Records who each new message mentions (members other than the sender).
async fn insert_mentions(
    tx: &mut SqliteConnection,
    assigned: &[(usize, &NewMessage, Seq)],
    members: &Members,
) -> Result<()> {
    let rows: Vec<(UserId, ConversationId, Seq)> = assigned
        .iter()
        .flat_map(|&(_, m, seq)| {
            let conv = members.get(&m.conversation_id);
            m.mentions
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(move |&u| u != m.sender_id && conv.is_some_and(|c| c.members.contains(&u)))
                .map(move |u| (u, m.conversation_id, seq))
        })
        .collect();
    for chunk in pieces(&rows) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT OR IGNORE INTO mentions (user_id, conversation_id, seq) ");
        q.push_values(chunk, |mut row, (u, c, seq)| {
            row.push_bind(*u).push_bind(*c).push_bind(*seq);
        });
        q.build().persistent(true).execute(&mut *tx).await?;
    }
    Ok(())
}

/// A repeat of a message sent earlier in the same batch answers like a
/// resend of it: same seq, flagged duplicate.
pub(crate) fn resolve_repeats(out: &mut [Option<WriteOutcome>], repeats: &[(usize, usize)]) {
    for &(i, first) in repeats {
        out[i] = match &out[first] {
            Some(WriteOutcome::Appended {
                seq, ts, members, ..
            }) => Some(WriteOutcome::Appended {
                seq: *seq,
                ts: *ts,
                duplicate: true,
                members: members.clone(),
            }),
            other => other.clone(),
        };
    }
}

async fn move_cursors(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    // Coalesce: only the highest position per cursor is written.
    let mut highest: HashMap<(bool, i64, ConversationId), (usize, Seq)> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (key, user, seq) = match op {
            WriteOp::Append(_) | WriteOp::Group { .. } | WriteOp::Message { .. } => continue,
            WriteOp::Read {
                user_id,
                conversation_id,
                seq,
            } => ((true, *user_id, *conversation_id), *user_id, *seq),
            WriteOp::Delivered {
                device_id,
                user_id,
                conversation_id,
                seq,
            } => ((false, *device_id, *conversation_id), *user_id, *seq),
        };
        if is_member(members, key.2, user).is_none() {
            out[i] = Some(WriteOutcome::Rejected(ErrorCode::NotFound));
            continue;
        }
        out[i] = Some(WriteOutcome::CursorUnchanged);
        match highest.get(&key) {
            Some(&(_, best)) if best >= seq => {}
            _ => {
                highest.insert(key, (i, seq));
            }
        }
    }
    for ((is_read, who, conv), (i, seq)) in highest {
        let moved: Option<i64> = if is_read {
            sqlx::query_scalar(
                "UPDATE members SET read_seq = MIN(?1, c.last_seq) FROM conversations c
                 WHERE c.id = ?2 AND members.conversation_id = ?2 AND members.user_id = ?3
                   AND members.read_seq < MIN(?1, c.last_seq)
                 RETURNING read_seq",
            )
            .bind(seq)
            .bind(conv)
            .bind(who)
            .fetch_optional(&mut *tx)
            .await?
        } else {
            sqlx::query_scalar(
                "INSERT INTO device_cursors (device_id, conversation_id, delivered_seq)
                 SELECT ?1, c.id, MIN(?3, c.last_seq) FROM conversations c
                 WHERE c.id = ?2 AND MIN(?3, c.last_seq) > 0
                 ON CONFLICT (device_id, conversation_id) DO UPDATE
                   SET delivered_seq = excluded.delivered_seq
                   WHERE excluded.delivered_seq > device_cursors.delivered_seq
                 RETURNING delivered_seq",
            )
            .bind(who)
            .bind(conv)
            .bind(seq)
            .fetch_optional(&mut *tx)
            .await?
        };
        if let (Some(seq), Some(info)) = (moved, members.get(&conv)) {
            out[i] = Some(WriteOutcome::CursorMoved {
                seq,
                members: info.members.clone(),
                kind: info.kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_cover_everything_in_known_sizes() {
        for n in [0usize, 1, 3, 5, 17, 300, 511, 512, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let cut: Vec<&[usize]> = pieces(&items).collect();
            assert!(cut.iter().all(|p| super::PIECES.contains(&p.len())), "{n}");
            let joined: Vec<usize> = cut.concat();
            assert_eq!(joined, items, "{n}");
        }
    }
}
