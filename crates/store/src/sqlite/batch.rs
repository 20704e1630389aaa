//! Sends and cursor moves on the writer thread (rusqlite, synchronous):
//! membership, idempotency, direct-message rules, seq reservation, inserts
//! and cursors of a whole batch in the one transaction the writer opened,
//! each statement a cached prepared statement (list statements come in the
//! few sizes of [`pieces`], so their texts repeat). Every decision is in
//! [`crate::write_plan`]; this file only runs SQL.

use std::collections::{HashMap, HashSet};

use confab_proto::{ConversationId, Seq};
use rusqlite::{params_from_iter, OptionalExtension, Transaction};

use super::commit::pieces;
use super::media::media_id_of;
use crate::types::*;
use crate::write_plan::{self as plan, Members, Pair};
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
    for (i, conv, user) in plan::not_found_actors(ops, &out) {
        let former: Option<i64> = tx
            .prepare_cached(
                "SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?",
            )?
            .query_row((conv, user), |r| r.get(0))
            .optional()?;
        if former.is_some() {
            plan::refuse_former(&mut out, i);
        }
    }
    Ok(plan::finish(out))
}

fn load_members(tx: &Transaction<'_>, ops: &[WriteOp]) -> Result<Members> {
    let ids = plan::touched_conversations(ops);
    let mut rows = Vec::new();
    let mut kinds = HashMap::new();
    for piece in pieces(&ids) {
        let mut st = tx.prepare_cached(&format!(
            "SELECT id, kind FROM conversations WHERE id IN ({})",
            marks(piece.len())
        ))?;
        let mut found = st.query(params_from_iter(piece.iter()))?;
        while let Some(row) = found.next()? {
            kinds.insert(
                row.get::<_, i64>(0)?,
                plan::kind_of(&row.get::<_, String>(1)?),
            );
        }
        let mut st = tx.prepare_cached(&format!(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id IN ({})",
            marks(piece.len())
        ))?;
        let mut found = st.query(params_from_iter(piece.iter()))?;
        while let Some(row) = found.next()? {
            rows.push((row.get(0)?, row.get(1)?));
        }
    }
    Ok(plan::members_from(rows, &kinds))
}

/// Which of these pairs `tail` (SQL over `p(a, b)`) returns.
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

fn append_messages(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let candidates = plan::authorised_appends(ops, members, out);
    if candidates.is_empty() {
        return Ok(());
    }
    let mut committed = plan::Committed::new();
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
    let (mut fresh, repeats) = plan::fresh_sends(&candidates, &committed, members, out);
    let pairs = plan::direct_pairs(&fresh, members);
    if !pairs.is_empty() {
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
        plan::refuse_direct(&mut fresh, members, &blocked, friends.as_ref(), out);
    }
    if fresh.is_empty() {
        plan::resolve_repeats(out, &repeats);
        return Ok(());
    }

    let counts = plan::seq_counts(&fresh);
    let mut reserved: Vec<(ConversationId, Seq)> = Vec::new();
    for piece in pieces(&counts) {
        let mut st = tx.prepare_cached(&format!(
            "WITH v(id, n) AS (VALUES {}) UPDATE conversations SET last_seq = last_seq + v.n
             FROM v WHERE conversations.id = v.id
             RETURNING conversations.id, conversations.last_seq",
            pair_marks(piece.len())
        ))?;
        let flat = piece.iter().flat_map(|(id, n)| [*id, *n]);
        let mut rows = st.query(params_from_iter(flat))?;
        while let Some(row) = rows.next()? {
            reserved.push((row.get(0)?, row.get(1)?));
        }
    }
    let assigned = plan::assign_seqs(fresh, &counts, reserved, out);
    for chunk in pieces(&assigned) {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        let mut st = tx.prepare_cached(&format!(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
             VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        ))?;
        let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(chunk.len() * 7);
        for (_, m, seq) in chunk {
            values.extend([
                ToSqlOutput::Borrowed(ValueRef::Integer(m.conversation_id)),
                ToSqlOutput::Borrowed(ValueRef::Integer(*seq)),
                ToSqlOutput::Borrowed(ValueRef::Integer(m.sender_id)),
                ToSqlOutput::Borrowed(ValueRef::Text(m.client_msg_id.as_bytes())),
                ToSqlOutput::Borrowed(ValueRef::Text(m.kind.as_str().as_bytes())),
                ToSqlOutput::Borrowed(ValueRef::Text(m.body.as_bytes())),
                ToSqlOutput::Borrowed(ValueRef::Integer(m.ts)),
            ]);
        }
        st.execute(params_from_iter(values.iter()))?;
    }
    let mentions = plan::mention_rows(&assigned, members);
    for chunk in pieces(&mentions) {
        let mut st = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO mentions (user_id, conversation_id, seq) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        ))?;
        st.execute(params_from_iter(
            chunk.iter().flat_map(|(u, c, s)| [*u, *c, *s]),
        ))?;
    }
    for &(_, m, seq) in &assigned {
        if let Some(id) = media_id_of(m) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO message_media (media_id, conversation_id, seq) VALUES (?, ?, ?)",
            )?
            .execute((id, m.conversation_id, seq))?;
        }
    }
    plan::appended(&assigned, &repeats, members, out);
    Ok(())
}

fn move_cursors(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    for ((is_read, who, conv), i, seq) in plan::cursor_moves(ops, members, out) {
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
        if let Some(seq) = moved {
            plan::cursor_moved(out, i, conv, seq, members);
        }
    }
    Ok(())
}
