//! Sends and cursor moves on the writer thread (rusqlite, synchronous):
//! membership, idempotency, direct-message rules, seq reservation, inserts
//! and cursors of a whole batch in the one transaction the writer opened,
//! each statement a cached prepared statement (list statements come in the
//! few sizes of [`pieces`], so their texts repeat).
//!
//! The decisions are those of `commit.rs` (the sqlx path that batches with
//! group changes or message edits still take); only the calls differ.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use confab_proto::api::ConversationKind;
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, Millis, Seq, UserId};
use rusqlite::{params_from_iter, OptionalExtension, Transaction};

use super::commit::{
    actor_of, conversation_of, is_member, members_of, pieces, resolve_repeats, Info, Members,
};
use super::media::media_id_of;
use crate::types::*;
use crate::Result;

/// `?, ?, …` with `n` placeholders.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, ?), (?, ?), …` with `n` pairs.
fn pair_marks(n: usize) -> String {
    vec!["(?, ?)"; n].join(", ")
}

/// Commits sends and cursor moves (no group change or message change).
pub(crate) fn plain_writes(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    rules: CommitRules,
) -> Result<Vec<WriteOutcome>> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; ops.len()];
    let members = load_members(tx, ops)?;
    append_messages(tx, ops, &members, &mut out, rules)?;
    move_cursors(tx, ops, &members, &mut out)?;
    refuse_outsiders(tx, ops, &mut out)?;
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::Rejected(ErrorCode::Internal)))
        .collect())
}

fn refuse_outsiders(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        if !matches!(out[i], Some(WriteOutcome::Rejected(ErrorCode::NotFound))) {
            continue;
        }
        let former: Option<i64> = tx
            .prepare_cached(
                "SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?",
            )?
            .query_row((conversation_of(op), actor_of(op)), |r| r.get(0))
            .optional()?;
        if former.is_some() {
            out[i] = Some(WriteOutcome::Rejected(ErrorCode::Forbidden));
        }
    }
    Ok(())
}

fn load_members(tx: &Transaction<'_>, ops: &[WriteOp]) -> Result<Members> {
    let ids: Vec<ConversationId> = ops
        .iter()
        .map(conversation_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut grouped: HashMap<ConversationId, Vec<UserId>> = HashMap::new();
    let mut kinds: HashMap<ConversationId, ConversationKind> = HashMap::new();
    for piece in pieces(&ids) {
        let mut st = tx.prepare_cached(&format!(
            "SELECT id, kind FROM conversations WHERE id IN ({})",
            marks(piece.len())
        ))?;
        let mut rows = st.query(params_from_iter(piece.iter()))?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let kind: String = row.get(1)?;
            let kind = if kind == "direct" {
                ConversationKind::Direct
            } else {
                ConversationKind::Group
            };
            kinds.insert(id, kind);
        }
        let mut st = tx.prepare_cached(&format!(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id IN ({})",
            marks(piece.len())
        ))?;
        let mut rows = st.query(params_from_iter(piece.iter()))?;
        while let Some(row) = rows.next()? {
            grouped
                .entry(row.get::<_, i64>(0)?)
                .or_default()
                .push(row.get(1)?);
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

type Pair = (UserId, UserId);

/// Which of these pairs match `condition` (SQL over `p.a`, `p.b`).
fn matching_pairs(tx: &Transaction<'_>, pairs: &[Pair], tail: &str) -> Result<HashSet<Pair>> {
    let mut hit = HashSet::new();
    for piece in pieces(pairs) {
        let mut st = tx.prepare_cached(&format!(
            "WITH p(a, b) AS (VALUES {}) {tail}",
            pair_marks(piece.len())
        ))?;
        let flat = piece.iter().flat_map(|(a, b)| [*a, *b]);
        let mut rows = st.query(params_from_iter(flat))?;
        while let Some(row) = rows.next()? {
            hit.insert((row.get(0)?, row.get(1)?));
        }
    }
    Ok(hit)
}

fn check_direct_rules(
    tx: &Transaction<'_>,
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
    let blocked = matching_pairs(
        tx,
        &pairs,
        "SELECT a, b FROM p WHERE EXISTS (SELECT 1 FROM blocks
           WHERE (blocker_id = p.a AND blocked_id = p.b) OR (blocker_id = p.b AND blocked_id = p.a))",
    )?;
    let friends = match rules.direct_messages {
        DirectMessagePolicy::Anyone => None,
        DirectMessagePolicy::FriendsOnly => Some(matching_pairs(
            tx,
            &pairs,
            "SELECT p.a, p.b FROM p JOIN friendships f ON f.user_id = p.a AND f.friend_id = p.b",
        )?),
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

fn append_messages(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
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
        let mut st = tx.prepare_cached(&format!(
            "SELECT client_msg_id, sender_id, conversation_id, seq, ts FROM messages
             WHERE client_msg_id IN ({})",
            marks(piece.len())
        ))?;
        let mut rows = st.query(params_from_iter(
            piece.iter().map(|(_, m)| m.client_msg_id.as_str()),
        ))?;
        while let Some(row) = rows.next()? {
            committed.insert(
                (row.get(0)?, row.get(1)?, row.get(2)?),
                (row.get(3)?, row.get(4)?),
            );
        }
    }

    let mut fresh: Vec<(usize, &NewMessage)> = Vec::new();
    let mut first_in_batch: HashMap<Key, usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for &(i, m) in &candidates {
        let key: Key = (m.client_msg_id.as_str(), m.sender_id, m.conversation_id);
        if let Some(&(seq, ts)) =
            committed.get(&(m.client_msg_id.clone(), m.sender_id, m.conversation_id))
        {
            out[i] = Some(WriteOutcome::Appended {
                seq,
                ts,
                duplicate: true,
                members: members_of(members, m.conversation_id),
            });
        } else if let Some(&first) = first_in_batch.get(&key) {
            repeats.push((i, first));
        } else {
            first_in_batch.insert(key, i);
            fresh.push((i, m));
        }
    }
    check_direct_rules(tx, &mut fresh, members, out, rules)?;
    if fresh.is_empty() {
        resolve_repeats(out, &repeats);
        return Ok(());
    }

    // Reserve a block of seqs per conversation.
    let mut counts: HashMap<ConversationId, i64> = HashMap::new();
    for (_, m) in &fresh {
        *counts.entry(m.conversation_id).or_default() += 1;
    }
    let count_list: Vec<(ConversationId, i64)> = counts.iter().map(|(k, v)| (*k, *v)).collect();
    let mut next_seq: HashMap<ConversationId, Seq> = HashMap::new();
    for piece in pieces(&count_list) {
        let mut st = tx.prepare_cached(&format!(
            "WITH v(id, n) AS (VALUES {}) UPDATE conversations SET last_seq = last_seq + v.n
             FROM v WHERE conversations.id = v.id
             RETURNING conversations.id, conversations.last_seq",
            pair_marks(piece.len())
        ))?;
        let flat = piece.iter().flat_map(|(id, n)| [*id, *n]);
        let mut rows = st.query(params_from_iter(flat))?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let last: i64 = row.get(1)?;
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
        let mut st = tx.prepare_cached(&format!(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
             VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        ))?;
        let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> = Vec::with_capacity(chunk.len() * 7);
        for (_, m, seq) in chunk {
            use rusqlite::types::{ToSqlOutput, ValueRef};
            values.push(ToSqlOutput::Borrowed(ValueRef::Integer(m.conversation_id)));
            values.push(ToSqlOutput::Borrowed(ValueRef::Integer(*seq)));
            values.push(ToSqlOutput::Borrowed(ValueRef::Integer(m.sender_id)));
            values.push(ToSqlOutput::Borrowed(ValueRef::Text(
                m.client_msg_id.as_bytes(),
            )));
            values.push(ToSqlOutput::Borrowed(ValueRef::Text(
                m.kind.as_str().as_bytes(),
            )));
            values.push(ToSqlOutput::Borrowed(ValueRef::Text(m.body.as_bytes())));
            values.push(ToSqlOutput::Borrowed(ValueRef::Integer(m.ts)));
        }
        st.execute(params_from_iter(values.iter()))?;
    }
    insert_mentions(tx, &assigned, members)?;
    insert_message_media(tx, &assigned)?;
    for (i, m, seq) in assigned {
        out[i] = Some(WriteOutcome::Appended {
            seq,
            ts: m.ts,
            duplicate: false,
            members: members_of(members, m.conversation_id),
        });
    }
    resolve_repeats(out, &repeats);
    Ok(())
}

fn insert_mentions(
    tx: &Transaction<'_>,
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
        let mut st = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO mentions (user_id, conversation_id, seq) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        ))?;
        let flat = chunk.iter().flat_map(|(u, c, s)| [*u, *c, *s]);
        st.execute(params_from_iter(flat))?;
    }
    Ok(())
}

fn insert_message_media(
    tx: &Transaction<'_>,
    assigned: &[(usize, &NewMessage, Seq)],
) -> Result<()> {
    for &(_, m, seq) in assigned {
        if let Some(id) = media_id_of(m) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO message_media (media_id, conversation_id, seq) VALUES (?, ?, ?)",
            )?
            .execute((id, m.conversation_id, seq))?;
        }
    }
    Ok(())
}

fn move_cursors(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
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
            tx.prepare_cached(
                "UPDATE members SET read_seq = MIN(?1, c.last_seq) FROM conversations c
                 WHERE c.id = ?2 AND members.conversation_id = ?2 AND members.user_id = ?3
                   AND members.read_seq < MIN(?1, c.last_seq)
                 RETURNING read_seq",
            )?
            .query_row((seq, conv, who), |r| r.get(0))
            .optional()?
        } else {
            tx.prepare_cached(
                "INSERT INTO device_cursors (device_id, conversation_id, delivered_seq)
                 SELECT ?1, c.id, MIN(?3, c.last_seq) FROM conversations c
                 WHERE c.id = ?2 AND MIN(?3, c.last_seq) > 0
                 ON CONFLICT (device_id, conversation_id) DO UPDATE
                   SET delivered_seq = excluded.delivered_seq
                   WHERE excluded.delivered_seq > device_cursors.delivered_seq
                 RETURNING delivered_seq",
            )?
            .query_row((who, conv, seq), |r| r.get(0))
            .optional()?
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
