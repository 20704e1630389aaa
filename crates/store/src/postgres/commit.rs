//! The group-commit write path: many sends and cursor moves, one transaction.
//!
//! Several nodes' committers run this at the same time on one database, so
//! the transaction starts by locking the rows of every conversation the
//! batch touches, in id order (no deadlocks between batches). From then on
//! nothing else can append to, or change the membership of, those
//! conversations until this transaction ends, and every later statement
//! (READ COMMITTED takes a fresh snapshot per statement) sees what the
//! previous holder committed: membership checks, the idempotency lookup and
//! seq reservation cannot race another node's batch. A resend that arrives
//! through another node while the first commit is in flight waits for the
//! lock and then finds the message committed. Nothing here ever relies on a
//! unique violation, which would abort the whole batch.
//!
//! Per batch segment (group changes split the batch, as in SQLite), however
//! many ops: one membership read, one idempotency lookup, the block and
//! friendship checks, one `UPDATE … RETURNING` that reserves a block of seqs
//! per conversation, one multi-row insert of messages and one of mentions,
//! one statement per kind of cursor, and one lookup of former members. Lists
//! travel as arrays (`UNNEST($1::bigint[], …)`), so the SQL text does not
//! depend on the batch size and every statement stays prepared.

use std::collections::{BTreeSet, HashMap, HashSet};

use confab_proto::api::ConversationKind;
use confab_proto::{ConversationId, Seq, UserId};
use sqlx::{PgConnection, PgPool, Row};

use super::media::media_id_of;
use super::{changes, groups};
use crate::types::*;
use crate::write_plan::{self as plan, conversation_of, Members, Pair};
use crate::Result;

/// Conversation kinds of the locked conversations.
type Kinds = HashMap<ConversationId, ConversationKind>;

pub(crate) async fn commit_batch(
    db: &PgPool,
    ops: &[WriteOp],
    rules: CommitRules,
) -> Result<Vec<WriteOutcome>> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; ops.len()];
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin().await?;
    let (kinds, mut epochs) = lock_conversations(&mut tx, ops).await?;
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
            plain_writes(
                &mut tx,
                &ops[start..i],
                &mut out[start..i],
                rules,
                &kinds,
                &mut epochs,
            )
            .await?;
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

/// Locks every conversation the batch touches (group changes included), in
/// id order, and returns their kinds and the MLS epochs of the encrypted
/// ones (which only this transaction can move while it holds the locks).
async fn lock_conversations(
    tx: &mut PgConnection,
    ops: &[WriteOp],
) -> Result<(Kinds, plan::Epochs)> {
    let ids = plan::touched_conversations(ops);
    let rows = sqlx::query(
        "SELECT id, kind, encrypted, mls_epoch FROM conversations WHERE id = ANY($1) ORDER BY id
         FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .persistent(true)
    .fetch_all(&mut *tx)
    .await?;
    let mut kinds = Kinds::with_capacity(rows.len());
    let mut epochs = plan::Epochs::new();
    for row in rows {
        let id: ConversationId = row.try_get(0)?;
        kinds.insert(id, plan::kind_of(row.try_get(1)?));
        if row.try_get::<bool, _>(2)? {
            epochs.insert(id, row.try_get(3)?);
        }
    }
    Ok((kinds, epochs))
}

/// Sends and cursor moves: a fixed handful of statements however many.
async fn plain_writes(
    tx: &mut PgConnection,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
    kinds: &Kinds,
    epochs: &mut plan::Epochs,
) -> Result<()> {
    let members = load_members(tx, ops, kinds).await?;
    append_messages(tx, ops, &members, epochs, out, rules).await?;
    move_cursors(tx, ops, &members, out).await?;
    refuse_outsiders(tx, ops, out).await
}

/// Ops refused as `NotFound` by a non-member: a former member gets
/// `Forbidden` instead (they know the conversation; they may not use it).
async fn refuse_outsiders(
    tx: &mut PgConnection,
    ops: &[WriteOp],
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    let refused = plan::not_found_actors(ops, out);
    if refused.is_empty() {
        return Ok(());
    }
    let convs: Vec<ConversationId> = refused.iter().map(|r| r.1).collect();
    let users: Vec<UserId> = refused.iter().map(|r| r.2).collect();
    let rows = sqlx::query(
        "SELECT f.conversation_id, f.user_id FROM former_members f
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(conv, usr)
           ON f.conversation_id = k.conv AND f.user_id = k.usr",
    )
    .bind(&convs)
    .bind(&users)
    .persistent(true)
    .fetch_all(&mut *tx)
    .await?;
    let mut former: HashSet<(ConversationId, UserId)> = HashSet::with_capacity(rows.len());
    for row in rows {
        former.insert((row.try_get(0)?, row.try_get(1)?));
    }
    for (i, conv, user) in refused {
        if former.contains(&(conv, user)) {
            plan::refuse_former(out, i);
        }
    }
    Ok(())
}

async fn load_members(tx: &mut PgConnection, ops: &[WriteOp], kinds: &Kinds) -> Result<Members> {
    let ids: Vec<ConversationId> = ops
        .iter()
        .map(conversation_of)
        .filter(|id| kinds.contains_key(id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut found = Vec::new();
    if !ids.is_empty() {
        let rows = sqlx::query(
            "SELECT conversation_id, user_id FROM members WHERE conversation_id = ANY($1)
             ORDER BY conversation_id, user_id",
        )
        .bind(&ids)
        .persistent(true)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            found.push((row.try_get(0)?, row.try_get(1)?));
        }
    }
    Ok(plan::members_from(found, kinds))
}

fn unzip_pairs(pairs: &[Pair]) -> (Vec<UserId>, Vec<UserId>) {
    pairs.iter().copied().unzip()
}

/// Which of these pairs have a block either way.
async fn blocked_pairs(tx: &mut PgConnection, pairs: &[Pair]) -> Result<HashSet<Pair>> {
    let (a, b) = unzip_pairs(pairs);
    let rows = sqlx::query(
        "SELECT p.a, p.b FROM UNNEST($1::bigint[], $2::bigint[]) AS p(a, b)
         WHERE EXISTS (SELECT 1 FROM blocks
             WHERE (blocker_id = p.a AND blocked_id = p.b) OR (blocker_id = p.b AND blocked_id = p.a))",
    )
    .bind(&a)
    .bind(&b)
    .persistent(true)
    .fetch_all(&mut *tx)
    .await?;
    let mut hit = HashSet::new();
    for row in rows {
        hit.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(hit)
}

/// Which of these pairs are friends.
async fn friend_pairs(tx: &mut PgConnection, pairs: &[Pair]) -> Result<HashSet<Pair>> {
    let (a, b) = unzip_pairs(pairs);
    let rows = sqlx::query(
        "SELECT p.a, p.b FROM UNNEST($1::bigint[], $2::bigint[]) AS p(a, b)
         JOIN friendships f ON f.user_id = p.a AND f.friend_id = p.b",
    )
    .bind(&a)
    .bind(&b)
    .persistent(true)
    .fetch_all(&mut *tx)
    .await?;
    let mut hit = HashSet::new();
    for row in rows {
        hit.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(hit)
}

/// Refuses fresh direct messages between users with a block either way, or
/// (under the friends-only policy) between strangers.
async fn check_direct_rules(
    tx: &mut PgConnection,
    fresh: &mut Vec<(usize, &NewMessage)>,
    members: &Members,
    out: &mut [Option<WriteOutcome>],
    rules: CommitRules,
) -> Result<()> {
    let pairs = plan::direct_pairs(fresh, members);
    if pairs.is_empty() {
        return Ok(());
    }
    let blocked = blocked_pairs(tx, &pairs).await?;
    let friends = match rules.direct_messages {
        DirectMessagePolicy::Anyone => None,
        DirectMessagePolicy::FriendsOnly => Some(friend_pairs(tx, &pairs).await?),
    };
    plan::refuse_direct(fresh, members, &blocked, friends.as_ref(), out);
    Ok(())
}

async fn append_messages(
    tx: &mut PgConnection,
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

    // Idempotency: what of this is already committed? The conversations are
    // locked, so nobody can commit one of these keys while we look.
    let mut committed = plan::Committed::new();
    {
        let keys: BTreeSet<(&str, UserId, ConversationId)> = candidates
            .iter()
            .map(|(_, m)| (m.client_msg_id.as_str(), m.sender_id, m.conversation_id))
            .collect();
        let mut ids = Vec::with_capacity(keys.len());
        let mut senders = Vec::with_capacity(keys.len());
        let mut convs = Vec::with_capacity(keys.len());
        for (id, sender, conv) in keys {
            ids.push(id);
            senders.push(sender);
            convs.push(conv);
        }
        let rows = sqlx::query(
            "SELECT m.client_msg_id, m.sender_id, m.conversation_id, m.seq, m.ts
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS k(cid, sender, conv)
             JOIN messages m
               ON m.client_msg_id = k.cid AND m.sender_id = k.sender AND m.conversation_id = k.conv",
        )
        .bind(&ids)
        .bind(&senders)
        .bind(&convs)
        .persistent(true)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            committed.insert(
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                (row.try_get(3)?, row.try_get(4)?),
            );
        }
    }

    let (mut fresh, repeats) = plan::fresh_sends(&candidates, &committed, members, out);
    check_direct_rules(tx, &mut fresh, members, out, rules).await?;
    let moved = plan::apply_epochs(&mut fresh, epochs, out);
    if !moved.is_empty() {
        let (ids, values): (Vec<ConversationId>, Vec<i64>) = moved.into_iter().unzip();
        sqlx::query(
            "UPDATE conversations c SET mls_epoch = v.epoch
             FROM UNNEST($1::bigint[], $2::bigint[]) AS v(id, epoch) WHERE c.id = v.id",
        )
        .bind(&ids)
        .bind(&values)
        .persistent(true)
        .execute(&mut *tx)
        .await?;
    }
    if fresh.is_empty() {
        plan::resolve_repeats(out, &repeats);
        return Ok(());
    }

    // Reserve a block of seqs per conversation in one statement.
    let counts = plan::seq_counts(&fresh);
    let (count_ids, count_ns): (Vec<ConversationId>, Vec<i64>) = counts.iter().copied().unzip();
    let rows = sqlx::query(
        "UPDATE conversations c SET last_seq = c.last_seq + v.n
         FROM UNNEST($1::bigint[], $2::bigint[]) AS v(id, n)
         WHERE c.id = v.id
         RETURNING c.id, c.last_seq",
    )
    .bind(&count_ids)
    .bind(&count_ns)
    .persistent(true)
    .fetch_all(&mut *tx)
    .await?;
    let mut reserved: Vec<(ConversationId, Seq)> = Vec::with_capacity(rows.len());
    for row in rows {
        reserved.push((row.try_get(0)?, row.try_get(1)?));
    }
    let assigned = plan::assign_seqs(fresh, &counts, reserved, out);
    if !assigned.is_empty() {
        let n = assigned.len();
        let mut convs = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut msg_kinds = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        let mut tss = Vec::with_capacity(n);
        for (_, m, seq) in &assigned {
            convs.push(m.conversation_id);
            seqs.push(*seq);
            senders.push(m.sender_id);
            ids.push(m.client_msg_id.as_str());
            msg_kinds.push(m.kind.as_str());
            bodies.push(m.body.as_str());
            tss.push(m.ts);
        }
        sqlx::query(
            "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],
                                  $5::text[], $6::text[], $7::bigint[])",
        )
        .bind(&convs)
        .bind(&seqs)
        .bind(&senders)
        .bind(&ids)
        .bind(&msg_kinds)
        .bind(&bodies)
        .bind(&tss)
        .persistent(true)
        .execute(&mut *tx)
        .await?;
    }
    insert_mentions(tx, &assigned, members).await?;
    insert_message_media(tx, &assigned).await?;
    plan::appended(&assigned, &repeats, members, out);
    Ok(())
}

/// Records who each new message mentions (members other than the sender).
async fn insert_mentions(
    tx: &mut PgConnection,
    assigned: &[(usize, &NewMessage, Seq)],
    members: &Members,
) -> Result<()> {
    let rows = plan::mention_rows(assigned, members);
    if rows.is_empty() {
        return Ok(());
    }
    let mut users = Vec::with_capacity(rows.len());
    let mut convs = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for (u, c, s) in rows {
        users.push(u);
        convs.push(c);
        seqs.push(s);
    }
    sqlx::query(
        "INSERT INTO mentions (user_id, conversation_id, seq)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&users)
    .bind(&convs)
    .bind(&seqs)
    .persistent(true)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn move_cursors(
    tx: &mut PgConnection,
    ops: &[WriteOp],
    members: &Members,
    out: &mut [Option<WriteOutcome>],
) -> Result<()> {
    let highest = plan::cursor_moves(ops, members, out);
    if highest.is_empty() {
        return Ok(());
    }
    // Sorted, so that rows are always locked in the same order.
    let mut highest: Vec<_> = highest
        .into_iter()
        .map(|(key, i, seq)| (key, (i, seq)))
        .collect();
    highest.sort_unstable_by_key(|&(key, _)| key);
    let mut moved: Vec<(usize, Seq)> = Vec::new();

    let reads: Vec<_> = highest
        .iter()
        .filter(|((is_read, ..), _)| *is_read)
        .collect();
    if !reads.is_empty() {
        let idx: Vec<i64> = reads.iter().map(|(_, (i, _))| *i as i64).collect();
        let users: Vec<UserId> = reads.iter().map(|((_, who, _), _)| *who).collect();
        let convs: Vec<ConversationId> = reads.iter().map(|((_, _, conv), _)| *conv).collect();
        let seqs: Vec<Seq> = reads.iter().map(|(_, (_, seq))| *seq).collect();
        let rows = sqlx::query(
            "UPDATE members m SET read_seq = LEAST(v.seq, c.last_seq)
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                    AS v(idx, usr, conv, seq)
             JOIN conversations c ON c.id = v.conv
             WHERE m.conversation_id = v.conv AND m.user_id = v.usr
               AND m.read_seq < LEAST(v.seq, c.last_seq)
             RETURNING v.idx, m.read_seq",
        )
        .bind(&idx)
        .bind(&users)
        .bind(&convs)
        .bind(&seqs)
        .persistent(true)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let i: i64 = row.try_get(0)?;
            moved.push((usize::try_from(i).unwrap_or(usize::MAX), row.try_get(1)?));
        }
    }

    let delivered: Vec<_> = highest
        .iter()
        .filter(|((is_read, ..), _)| !*is_read)
        .collect();
    if !delivered.is_empty() {
        let devices: Vec<i64> = delivered.iter().map(|((_, who, _), _)| *who).collect();
        let convs: Vec<ConversationId> = delivered.iter().map(|((_, _, conv), _)| *conv).collect();
        let seqs: Vec<Seq> = delivered.iter().map(|(_, (_, seq))| *seq).collect();
        let index: HashMap<(i64, ConversationId), usize> = delivered
            .iter()
            .map(|((_, who, conv), (i, _))| ((*who, *conv), *i))
            .collect();
        let rows = sqlx::query(
            "INSERT INTO device_cursors (device_id, conversation_id, delivered_seq)
             SELECT v.dev, c.id, LEAST(v.seq, c.last_seq)
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS v(dev, conv, seq)
             JOIN conversations c ON c.id = v.conv
             WHERE LEAST(v.seq, c.last_seq) > 0
             ON CONFLICT (device_id, conversation_id) DO UPDATE
               SET delivered_seq = EXCLUDED.delivered_seq
               WHERE EXCLUDED.delivered_seq > device_cursors.delivered_seq
             RETURNING device_id, conversation_id, delivered_seq",
        )
        .bind(&devices)
        .bind(&convs)
        .bind(&seqs)
        .persistent(true)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let key: (i64, ConversationId) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(&i) = index.get(&key) {
                moved.push((i, row.try_get(2)?));
            }
        }
    }

    for (i, seq) in moved {
        let Some(op) = ops.get(i) else { continue };
        plan::cursor_moved(out, i, conversation_of(op), seq, members);
    }
    Ok(())
}

/// Records which new messages reference which media: one statement for the
/// whole batch (UNNEST of three arrays), none when no message carries media.
pub(crate) async fn insert_message_media(
    tx: &mut PgConnection,
    assigned: &[(usize, &NewMessage, Seq)],
) -> Result<()> {
    let mut ids: Vec<String> = Vec::new();
    let mut convs: Vec<ConversationId> = Vec::new();
    let mut seqs: Vec<Seq> = Vec::new();
    for &(_, m, seq) in assigned {
        if let Some(id) = media_id_of(m) {
            ids.push(id);
            convs.push(m.conversation_id);
            seqs.push(seq);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO message_media (media_id, conversation_id, seq)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&convs)
    .bind(&seqs)
    .persistent(true)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
