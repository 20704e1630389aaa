//! The decisions of the group-commit write path, once for every backend:
//! who may send or move a cursor, which sends are resends, which direct
//! messages a block or the friends-only policy refuses, which seq each new
//! message takes, whom it mentions, which cursor positions are written, and
//! what each op's outcome is. The backends (`sqlite/batch.rs` on the writer
//! thread, `postgres/commit.rs` on sqlx) only run the
//! SQL that fetches the facts these functions decide on and writes what
//! they decided.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use confab_proto::api::ConversationKind;
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, Millis, Seq, UserId};

use crate::types::*;

/// What the write path needs to know about each touched conversation.
pub(crate) struct Info {
    pub(crate) kind: ConversationKind,
    pub(crate) members: Arc<[UserId]>,
}

/// The touched conversations that exist, with their members.
pub(crate) type Members = HashMap<ConversationId, Info>;

/// Two users: (sender, the other member of a direct conversation).
pub(crate) type Pair = (UserId, UserId);

/// One outcome slot per op of a batch segment; `None` until decided.
pub(crate) type Outcomes = [Option<WriteOutcome>];

/// The conversation an op is about.
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

/// The user an op acts for.
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

/// The conversations a batch touches, ascending (the lock order too).
pub(crate) fn touched_conversations(ops: &[WriteOp]) -> Vec<ConversationId> {
    ops.iter()
        .map(conversation_of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// [`Members`] from membership rows and conversation kinds.
pub(crate) fn members_from(
    rows: impl IntoIterator<Item = (ConversationId, UserId)>,
    kinds: &HashMap<ConversationId, ConversationKind>,
) -> Members {
    let mut grouped: HashMap<ConversationId, Vec<UserId>> = HashMap::new();
    for (c, u) in rows {
        grouped.entry(c).or_default().push(u);
    }
    grouped
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
        .collect()
}

/// A conversation kind as stored.
pub(crate) fn kind_of(stored: &str) -> ConversationKind {
    if stored == "direct" {
        ConversationKind::Direct
    } else {
        ConversationKind::Group
    }
}

/// `user`'s conversation, if they are a member of it.
pub(crate) fn is_member(members: &Members, conv: ConversationId, user: UserId) -> Option<&Info> {
    members.get(&conv).filter(|m| m.members.contains(&user))
}

/// Every member of `conv` (none when it is unknown).
pub(crate) fn members_of(members: &Members, conv: ConversationId) -> Arc<[UserId]> {
    members
        .get(&conv)
        .map(|i| i.members.clone())
        .unwrap_or_else(|| Arc::from(vec![]))
}

/// The ops refused as `NotFound` whose actor should be asked about: a
/// former member gets `Forbidden` instead (see [`refuse_former`]).
pub(crate) fn not_found_actors(
    ops: &[WriteOp],
    out: &Outcomes,
) -> Vec<(usize, ConversationId, UserId)> {
    ops.iter()
        .enumerate()
        .filter(|(i, _)| matches!(out[*i], Some(WriteOutcome::Rejected(ErrorCode::NotFound))))
        .map(|(i, op)| (i, conversation_of(op), actor_of(op)))
        .collect()
}

/// A former member knows the conversation; they may not use it.
pub(crate) fn refuse_former(out: &mut Outcomes, i: usize) {
    out[i] = Some(WriteOutcome::Rejected(ErrorCode::Forbidden));
}

/// The sends of members, in batch order; the others are refused.
pub(crate) fn authorised_appends<'a>(
    ops: &'a [WriteOp],
    members: &Members,
    out: &mut Outcomes,
) -> Vec<(usize, &'a NewMessage)> {
    let mut candidates = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let WriteOp::Append(m) = op {
            if is_member(members, m.conversation_id, m.sender_id).is_some() {
                candidates.push((i, m));
            } else {
                out[i] = Some(WriteOutcome::Rejected(ErrorCode::NotFound));
            }
        }
    }
    candidates
}

/// Sends by their op's index in the batch.
pub(crate) type Sends<'a> = Vec<(usize, &'a NewMessage)>;

/// Repeats inside a batch: `(op, the op it repeats)`.
pub(crate) type Repeats = Vec<(usize, usize)>;

/// Already committed messages by idempotency key
/// `(client_msg_id, sender, conversation)`: their seq and time.
pub(crate) type Committed = HashMap<(String, UserId, ConversationId), (Seq, Millis)>;

/// Sends not committed before, in batch order, and the repeats inside the
/// batch `(op, its first)`; resends of committed messages get their
/// original seq, flagged duplicate.
pub(crate) fn fresh_sends<'a>(
    candidates: &[(usize, &'a NewMessage)],
    committed: &Committed,
    members: &Members,
    out: &mut Outcomes,
) -> (Sends<'a>, Repeats) {
    type Key<'a> = (&'a str, UserId, ConversationId);
    let mut fresh = Vec::new();
    let mut first_in_batch: HashMap<Key, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for &(i, m) in candidates {
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
    (fresh, repeats)
}

/// The other member of a direct conversation `m` is sent to.
fn direct_peer(members: &Members, m: &NewMessage) -> Option<UserId> {
    let info = members.get(&m.conversation_id)?;
    if info.kind != ConversationKind::Direct {
        return None;
    }
    info.members.iter().copied().find(|&u| u != m.sender_id)
}

/// The (sender, peer) pairs of the fresh direct messages, for the block and
/// friendship lookups.
pub(crate) fn direct_pairs(fresh: &[(usize, &NewMessage)], members: &Members) -> Vec<Pair> {
    fresh
        .iter()
        .filter_map(|(_, m)| direct_peer(members, m).map(|o| (m.sender_id, o)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Refuses fresh direct messages between users with a block either way, or
/// (when `friends` is given: the friends-only policy) between strangers.
pub(crate) fn refuse_direct(
    fresh: &mut Vec<(usize, &NewMessage)>,
    members: &Members,
    blocked: &HashSet<Pair>,
    friends: Option<&HashSet<Pair>>,
    out: &mut Outcomes,
) {
    fresh.retain(|&(i, m)| {
        let Some(o) = direct_peer(members, m) else {
            return true;
        };
        let code = if blocked.contains(&(m.sender_id, o)) {
            ErrorCode::Blocked
        } else if friends.is_some_and(|f| !f.contains(&(m.sender_id, o))) {
            ErrorCode::NotFriends
        } else {
            return true;
        };
        out[i] = Some(WriteOutcome::Rejected(code));
        false
    });
}

/// The encrypted conversations a segment touches, with their current MLS
/// epoch (the epoch the next commit must name).
pub(crate) type Epochs = HashMap<ConversationId, i64>;

/// The rules of encrypted conversations, in batch order: only `encrypted`
/// messages (and the server's `system` ones) are accepted; each must name
/// the current epoch (`EpochConflict` otherwise); a commit that does moves
/// the epoch on, so the first commit for an epoch wins. Returns the
/// conversations whose epoch moved, with the new epoch.
pub(crate) fn apply_epochs(
    fresh: &mut Vec<(usize, &NewMessage)>,
    epochs: &mut Epochs,
    out: &mut Outcomes,
) -> Vec<(ConversationId, i64)> {
    use confab_proto::e2ee::{encrypted_header, MlsKind};
    use confab_proto::MessageKind;
    if epochs.is_empty() {
        return Vec::new();
    }
    let mut moved: HashMap<ConversationId, i64> = HashMap::new();
    fresh.retain(|&(i, m)| {
        let Some(current) = epochs.get_mut(&m.conversation_id) else {
            return true;
        };
        let code = match m.kind {
            MessageKind::System => return true,
            MessageKind::Encrypted => {
                let header = serde_json::from_str(&m.body)
                    .ok()
                    .and_then(|body| encrypted_header(&body).ok().flatten());
                match header {
                    None => ErrorCode::EncryptionRequired,
                    Some(h) if h.epoch as i64 != *current => ErrorCode::EpochConflict,
                    Some(h) => {
                        if h.mls == MlsKind::Commit {
                            *current += 1;
                            moved.insert(m.conversation_id, *current);
                        }
                        return true;
                    }
                }
            }
            _ => ErrorCode::EncryptionRequired,
        };
        out[i] = Some(WriteOutcome::Rejected(code));
        false
    });
    moved.into_iter().collect()
}

/// How many seqs each conversation needs, as a list for the reservation.
pub(crate) fn seq_counts(fresh: &[(usize, &NewMessage)]) -> Vec<(ConversationId, i64)> {
    let mut counts: HashMap<ConversationId, i64> = HashMap::new();
    for (_, m) in fresh {
        *counts.entry(m.conversation_id).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Gives each fresh message its seq from the reserved blocks (`last_seq`
/// after the reservation, per conversation); a conversation that reserved
/// nothing (it is gone) refuses its messages.
pub(crate) fn assign_seqs<'a>(
    fresh: Vec<(usize, &'a NewMessage)>,
    counts: &[(ConversationId, i64)],
    reserved: impl IntoIterator<Item = (ConversationId, Seq)>,
    out: &mut Outcomes,
) -> Vec<(usize, &'a NewMessage, Seq)> {
    let counts: HashMap<ConversationId, i64> = counts.iter().copied().collect();
    let mut next: HashMap<ConversationId, Seq> = reserved
        .into_iter()
        .map(|(id, last)| (id, last - counts.get(&id).copied().unwrap_or(0) + 1))
        .collect();
    let mut assigned = Vec::with_capacity(fresh.len());
    for (i, m) in fresh {
        let Some(seq) = next.get_mut(&m.conversation_id) else {
            out[i] = Some(WriteOutcome::Rejected(ErrorCode::NotFound));
            continue;
        };
        assigned.push((i, m, *seq));
        *seq += 1;
    }
    assigned
}

/// Who each new message mentions: members other than the sender, once.
pub(crate) fn mention_rows(
    assigned: &[(usize, &NewMessage, Seq)],
    members: &Members,
) -> Vec<(UserId, ConversationId, Seq)> {
    assigned
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
        .collect()
}

/// Records the outcomes of the inserted messages and of the repeats.
pub(crate) fn appended(
    assigned: &[(usize, &NewMessage, Seq)],
    repeats: &[(usize, usize)],
    members: &Members,
    out: &mut Outcomes,
) {
    for &(i, m, seq) in assigned {
        out[i] = Some(WriteOutcome::Appended {
            seq,
            ts: m.ts,
            duplicate: false,
            members: members_of(members, m.conversation_id),
        });
    }
    resolve_repeats(out, repeats);
}

/// A repeat of a message sent earlier in the same batch answers like a
/// resend of it: same seq, flagged duplicate.
pub(crate) fn resolve_repeats(out: &mut Outcomes, repeats: &[(usize, usize)]) {
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

/// A cursor: read (`true`, user) or delivered (`false`, device), in a
/// conversation.
pub(crate) type CursorKey = (bool, i64, ConversationId);

/// The cursor positions to write: only the highest per cursor, members'
/// only (others refused); every authorised move answers
/// `CursorUnchanged` until [`cursor_moved`] says otherwise.
pub(crate) fn cursor_moves(
    ops: &[WriteOp],
    members: &Members,
    out: &mut Outcomes,
) -> Vec<(CursorKey, usize, Seq)> {
    let mut highest: HashMap<CursorKey, (usize, Seq)> = HashMap::new();
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
    highest.into_iter().map(|(k, (i, s))| (k, i, s)).collect()
}

/// Op `i` moved its cursor of conversation `conv` to `seq`.
pub(crate) fn cursor_moved(
    out: &mut Outcomes,
    i: usize,
    conv: ConversationId,
    seq: Seq,
    members: &Members,
) {
    if let Some(info) = members.get(&conv) {
        out[i] = Some(WriteOutcome::CursorMoved {
            seq,
            members: info.members.clone(),
            kind: info.kind,
        });
    }
}

/// The batch's outcomes; a slot nothing decided on is an internal error.
pub(crate) fn finish(out: Vec<Option<WriteOutcome>>) -> Vec<WriteOutcome> {
    out.into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::Rejected(ErrorCode::Internal)))
        .collect()
}
