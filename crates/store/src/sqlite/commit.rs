//! The group-commit write path: many sends and cursor moves, one transaction.
//!
//! Per batch, whatever its size, this runs a fixed handful of statements:
//! members of the touched conversations (authorisation and recipients), one
//! idempotency lookup, one `UPDATE … RETURNING` that reserves a block of
//! seqs per conversation, one multi-row insert, then the cursor updates.

use std::collections::{HashMap, HashSet};

use confab_proto::{ConversationId, Seq};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{changes, groups};
use crate::types::*;
use crate::write_plan::{self as plan, Members, Pair};
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
    Ok(plan::finish(out))
}

/// Sends and cursor moves: a fixed handful of statements however many.
/// Every decision is in [`crate::write_plan`]; this only runs SQL.
async fn plain_writes(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let members = load_members(tx, ops).await?;
    append_messages(tx, ops, &members, out, rules).await?;
    move_cursors(tx, ops, &members, out).await?;
    for (i, conv, user) in plan::not_found_actors(ops, out) {
        let former: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?",
        )
        .bind(conv)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        if former.is_some() {
            plan::refuse_former(out, i);
        }
    }
    Ok(())
}

/// `(?, ?), (?, ?), …` for these pairs, bound.
fn push_pairs(q: &mut QueryBuilder<Sqlite>, pairs: &[(i64, i64)]) {
    let mut list = q.separated(", ");
    for (a, b) in pairs {
        list.push("(");
        list.push_bind_unseparated(*a);
        list.push_unseparated(", ");
        list.push_bind_unseparated(*b);
        list.push_unseparated(")");
    }
}

/// `id IN (…)` lists, bound.
fn push_ids(q: &mut QueryBuilder<Sqlite>, ids: &[ConversationId]) {
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
}

async fn load_members(tx: &mut SqliteConnection, ops: &[WriteOp]) -> Result<Members> {
    let ids = plan::touched_conversations(ops);
    let mut rows = Vec::new();
    let mut kinds = HashMap::new();
    for piece in pieces(&ids) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, kind FROM conversations WHERE id IN (");
        push_ids(&mut q, piece);
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            kinds.insert(row.try_get::<i64, _>(0)?, plan::kind_of(row.try_get(1)?));
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id IN (",
        );
        push_ids(&mut q, piece);
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            rows.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(plan::members_from(rows, &kinds))
}

/// Which of these pairs `tail` (SQL over `p(a, b)`) returns.
async fn matching_pairs(
    tx: &mut SqliteConnection,
    pairs: &[Pair],
    tail: &str,
) -> Result<HashSet<Pair>> {
    let mut hit = HashSet::new();
    for piece in pieces(pairs) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH p(a, b) AS (VALUES ");
        push_pairs(&mut q, piece);
        q.push(") ");
        q.push(tail);
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            hit.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(hit)
}

async fn append_messages(
    tx: &mut SqliteConnection,
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
    let (mut fresh, repeats) = plan::fresh_sends(&candidates, &committed, members, out);
    let pairs = plan::direct_pairs(&fresh, members);
    if !pairs.is_empty() {
        let blocked = matching_pairs(
            tx,
            &pairs,
            "SELECT a, b FROM p WHERE EXISTS (SELECT 1 FROM blocks
               WHERE (blocker_id = p.a AND blocked_id = p.b) OR (blocker_id = p.b AND blocked_id = p.a))",
        )
        .await?;
        let friends = match rules.direct_messages {
            DirectMessagePolicy::Anyone => None,
            DirectMessagePolicy::FriendsOnly => Some(
                matching_pairs(
                    tx,
                    &pairs,
                    "SELECT p.a, p.b FROM p JOIN friendships f ON f.user_id = p.a AND f.friend_id = p.b",
                )
                .await?,
            ),
        };
        plan::refuse_direct(&mut fresh, members, &blocked, friends.as_ref(), out);
    }
    if fresh.is_empty() {
        plan::resolve_repeats(out, &repeats);
        return Ok(());
    }

    // Reserve a block of seqs per conversation in one statement.
    let counts = plan::seq_counts(&fresh);
    let mut reserved: Vec<(ConversationId, Seq)> = Vec::new();
    for piece in pieces(&counts) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH v(id, n) AS (VALUES ");
        push_pairs(&mut q, piece);
        q.push(
            ") UPDATE conversations SET last_seq = last_seq + v.n FROM v WHERE conversations.id = v.id
             RETURNING conversations.id, conversations.last_seq",
        );
        for row in q.build().persistent(true).fetch_all(&mut *tx).await? {
            reserved.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    let assigned = plan::assign_seqs(fresh, &counts, reserved, out);
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
    let mentions = plan::mention_rows(&assigned, members);
    for chunk in pieces(&mentions) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT OR IGNORE INTO mentions (user_id, conversation_id, seq) ");
        q.push_values(chunk, |mut row, (u, c, seq)| {
            row.push_bind(*u).push_bind(*c).push_bind(*seq);
        });
        q.build().persistent(true).execute(&mut *tx).await?;
    }
    super::media::insert_message_media(tx, &assigned).await?;
    plan::appended(&assigned, &repeats, members, out);
    Ok(())
}

async fn move_cursors(
    tx: &mut SqliteConnection,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    for ((is_read, who, conv), i, seq) in plan::cursor_moves(ops, members, out) {
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
