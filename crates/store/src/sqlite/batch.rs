//! The group-commit write path on the writer thread (rusqlite, synchronous):
//! membership, idempotency, direct-message rules, seq reservation, inserts
//! and cursors of a whole batch (group and message changes in their place,
//! `batch_changes.rs`) in the one transaction the writer opened,
//! each statement a cached prepared statement (list statements come in the
//! few sizes of [`pieces`], so their texts repeat). Every decision is in
//! [`crate::write_plan`]; this file only runs SQL.

use std::collections::{HashMap, HashSet};

use confab_proto::{ConversationId, Seq};
use rusqlite::{params_from_iter, OptionalExtension, Transaction};

use super::batch_changes;
use super::media::media_id_of;
use crate::types::*;
use crate::write_plan::{self as plan, Members, Pair};
use crate::Result;

/// Statement sizes for lists (multi-row INSERT, IN lists, VALUES lists).
/// A batch is cut greedily into pieces of these sizes, so only a handful of
/// distinct SQL texts exist and every one stays in the statement cache:
/// preparing a fresh 500-row statement per batch costs more than running it.
const PIECES: [usize; 7] = [512, 128, 32, 8, 4, 2, 1];

/// Cuts `items` into slices whose lengths are all in [`PIECES`].
fn pieces<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = PIECES.iter().copied().find(|&p| p <= items.len())?;
        let (head, tail) = items.split_at(n);
        items = tail;
        Some(head)
    })
}

/// `?, ?, …` with `n` placeholders.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, ?), (?, ?), …` with `n` pairs.
fn pair_marks(n: usize) -> String {
    vec!["(?, ?)"; n].join(", ")
}

/// Commits a whole batch in the writer's transaction. Group and message
/// changes split it: the sends and cursor moves before one see the state
/// before it, the ones after see it after.
pub(crate) fn commit_batch(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    rules: CommitRules,
) -> Result<Vec<WriteOutcome>> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; ops.len()];
    let mut start = 0;
    for i in 0..=ops.len() {
        let split = match ops.get(i) {
            Some(op @ (WriteOp::Group { .. } | WriteOp::Message { .. })) => Some(op),
            Some(_) => continue,
            None => None,
        };
        if start < i {
            plain_writes(tx, &ops[start..i], &mut out[start..i], rules)?;
        }
        match split {
            Some(WriteOp::Group { change, ts }) => {
                out[i] = Some(match batch_changes::apply_group(tx, change, *ts)? {
                    Ok(done) => WriteOutcome::GroupChanged(done),
                    Err(code) => WriteOutcome::Rejected(code),
                });
            }
            Some(WriteOp::Message { change, ts }) => {
                out[i] = Some(match batch_changes::apply_message(tx, change, *ts)? {
                    Ok(done) => WriteOutcome::MessageChanged(Box::new(done)),
                    Err(code) => WriteOutcome::Rejected(code),
                });
            }
            _ => {}
        }
        start = i + 1;
    }
    Ok(plan::finish(out))
}

/// Sends and cursor moves: a fixed handful of statements however many.
fn plain_writes(
    tx: &Transaction<'_>,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let (members, mut epochs) = load_members(tx, ops)?;
    append_messages(tx, ops, &members, &mut epochs, out, rules)?;
    move_cursors(tx, ops, &members, out)?;
    for (i, conv, user) in plan::not_found_actors(ops, out) {
        let former: Option<i64> = tx
            .prepare_cached(
                "SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?",
            )?
            .query_row((conv, user), |r| r.get(0))
            .optional()?;
        if former.is_some() {
            plan::refuse_former(out, i);
        }
    }
    Ok(())
}

fn load_members(tx: &Transaction<'_>, ops: &[WriteOp]) -> Result<(Members, plan::Epochs)> {
    let ids = plan::touched_conversations(ops);
    let mut rows = Vec::new();
    let mut kinds = HashMap::new();
    let mut epochs = plan::Epochs::new();
    for piece in pieces(&ids) {
        let mut st = tx.prepare_cached(&format!(
            "SELECT id, kind, encrypted, mls_epoch FROM conversations WHERE id IN ({})",
            marks(piece.len())
        ))?;
        let mut found = st.query(params_from_iter(piece.iter()))?;
        while let Some(row) = found.next()? {
            let id = row.get::<_, i64>(0)?;
            kinds.insert(id, plan::kind_of(&row.get::<_, String>(1)?));
            if row.get::<_, bool>(2)? {
                epochs.insert(id, row.get(3)?);
            }
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
    Ok((plan::members_from(rows, &kinds), epochs))
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
    epochs: &mut plan::Epochs,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let candidates = plan::authorised_appends(ops, members, out);
    if candidates.is_empty() {
        return Ok(());
    }
    let mut committed = plan::Committed::new();
    for piece in pieces(&candidates) {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        // By the idempotency index's order (conversation, sender, client
        // id): one conversation's keys sit together, not spread over the
        // index by their random client ids.
        let mut st = tx.prepare_cached(&format!(
            "WITH k(c, s, id) AS (VALUES {})
             SELECT m.client_msg_id, m.sender_id, m.conversation_id, m.seq, m.ts
             FROM k JOIN messages m
               ON m.conversation_id = k.c AND m.sender_id = k.s AND m.client_msg_id = k.id",
            vec!["(?, ?, ?)"; piece.len()].join(", ")
        ))?;
        let mut keys: Vec<ToSqlOutput<'_>> = Vec::with_capacity(piece.len() * 3);
        for (_, m) in piece {
            keys.extend([
                ToSqlOutput::Borrowed(ValueRef::Integer(m.conversation_id)),
                ToSqlOutput::Borrowed(ValueRef::Integer(m.sender_id)),
                ToSqlOutput::Borrowed(ValueRef::Text(m.client_msg_id.as_bytes())),
            ]);
        }
        let mut rows = st.query(params_from_iter(keys.iter()))?;
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
    for (id, epoch) in plan::apply_epochs(&mut fresh, epochs, out) {
        tx.prepare_cached("UPDATE conversations SET mls_epoch = ? WHERE id = ?")?
            .execute((epoch, id))?;
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
