//! The rules of edits, deletions for everyone and reactions, written once
//! for both backends: who may change a message ([`actor`], [`outsider`],
//! [`refuse_target`]), what the change writes ([`plan`]), what the target
//! looks like after it ([`Write::apply_to`]) and who hears of it
//! ([`audience`]). The SQL runs per backend, inside the committer's
//! transaction: `sqlite/batch_changes.rs` on the writer thread,
//! `postgres/changes.rs`.

use confab_proto::SystemNotice;
use std::collections::BTreeMap;
use std::sync::Arc;

use confab_proto::error::ErrorCode;
use confab_proto::{MessageKind, MessageRecord, Millis, Seq, UserId};
use serde_json::{json, Value};

use crate::types::*;

/// What to write for a change.
pub(crate) enum Write {
    /// The new body (an edit).
    Body(Value),
    /// Body `{}`, `deleted_at`, no reactions.
    Tombstone,
    /// The new reactions.
    Reactions(BTreeMap<String, Vec<UserId>>),
}

impl Write {
    /// The target as it reads after this write at `ts`.
    pub(crate) fn apply_to(&self, target: &mut MessageRecord, ts: Millis) {
        match self {
            Write::Body(body) => {
                target.body = body.clone();
                target.edited_at = Some(ts);
            }
            Write::Tombstone => {
                target.body = json!({});
                target.deleted = true;
                target.reactions.clear();
            }
            Write::Reactions(map) => target.reactions = map.clone(),
        }
    }
}

/// A change's decision: what to write and the notice to append.
pub(crate) struct Plan {
    pub(crate) write: Write,
    /// Body of the `system` notice.
    pub(crate) notice: Value,
}

/// A conversation's members as both backends read them: (user, role,
/// joined seq), by user id.
pub(crate) type Roster = Vec<(UserId, String, Seq)>;

/// The seq of the message a change is about.
pub(crate) fn target_seq(change: &MessageChange) -> Seq {
    match change {
        MessageChange::Edit { seq, .. }
        | MessageChange::Delete { seq, .. }
        | MessageChange::React { seq, .. } => *seq,
    }
}

/// The actor's role and join point, `None` when it is not a member.
pub(crate) fn actor(roster: &Roster, by: UserId) -> Option<(String, Seq)> {
    roster
        .iter()
        .find(|(u, _, _)| *u == by)
        .map(|(_, role, joined)| (role.clone(), *joined))
}

/// The refusal for an actor that is not a member: a former member may
/// know the message exists, anyone else is told nothing.
pub(crate) fn outsider(former_member: bool) -> ErrorCode {
    if former_member {
        ErrorCode::Forbidden
    } else {
        ErrorCode::NotFound
    }
}

/// The refusal for a target the actor may not change whatever the change:
/// one from before it joined (it cannot see it) or a `system` notice.
pub(crate) fn refuse_target(target: &MessageRecord, joined: Seq) -> Option<ErrorCode> {
    if target.seq <= joined {
        Some(ErrorCode::NotFound)
    } else if target.kind == MessageKind::System {
        Some(ErrorCode::BadRequest)
    } else {
        None
    }
}

/// Who hears of a change to message `seq`: every member, and those who
/// can see the message (joined before it).
pub(crate) fn audience(roster: &Roster, seq: Seq) -> (Arc<[UserId]>, Arc<[UserId]>) {
    let members = roster.iter().map(|(u, _, _)| *u).collect();
    let viewers = roster
        .iter()
        .filter(|(_, _, j)| *j < seq)
        .map(|(u, _, _)| *u)
        .collect();
    (members, viewers)
}

/// Decides a change against the target's current state, the conversation
/// kind and the actor's role: the same rules on every backend. `Ok(None)`
/// when there is nothing to change.
pub(crate) fn plan(
    change: &MessageChange,
    target: &MessageRecord,
    conversation_kind: &str,
    role: &str,
    ts: Millis,
) -> std::result::Result<Option<Plan>, ErrorCode> {
    let seq = target.seq;
    match change {
        MessageChange::Edit { by, body, .. } => {
            if target.deleted {
                return Err(ErrorCode::NotFound);
            }
            if *by != target.sender_id {
                return Err(ErrorCode::Forbidden);
            }
            let old = target.body.as_object().cloned().unwrap_or_default();
            let new = body.as_object().ok_or(ErrorCode::BadRequest)?;
            let body = match target.kind {
                MessageKind::Text => {
                    if !new.get("text").is_some_and(Value::is_string) {
                        return Err(ErrorCode::BadRequest);
                    }
                    let mut b = serde_json::Map::new();
                    b.insert("text".into(), new["text"].clone());
                    if let Some(m) = new.get("mentions") {
                        b.insert("mentions".into(), m.clone());
                    }
                    if let Some(r) = old.get("reply_to") {
                        b.insert("reply_to".into(), r.clone());
                    }
                    b
                }
                MessageKind::Image | MessageKind::Voice | MessageKind::File => {
                    // Only the caption changes; anything else is a mistake.
                    if new.keys().any(|k| k != "caption") {
                        return Err(ErrorCode::BadRequest);
                    }
                    let mut b = old;
                    match new.get("caption") {
                        Some(Value::String(c)) => {
                            b.insert("caption".into(), Value::String(c.clone()));
                        }
                        None | Some(Value::Null) => {
                            b.remove("caption");
                        }
                        Some(_) => return Err(ErrorCode::BadRequest),
                    }
                    b
                }
                _ => return Err(ErrorCode::BadRequest),
            };
            Ok(Some(Plan {
                write: Write::Body(Value::Object(body)),
                notice: SystemNotice::MessageEdited {
                    edited_at: ts,
                    target_seq: seq,
                }
                .to_body(),
            }))
        }
        MessageChange::Delete { by, .. } => {
            let admin = conversation_kind == "group" && (role == "owner" || role == "admin");
            if *by != target.sender_id && !admin {
                return Err(ErrorCode::Forbidden);
            }
            if target.deleted {
                return Ok(None);
            }
            Ok(Some(Plan {
                write: Write::Tombstone,
                notice: SystemNotice::MessageDeleted { target_seq: seq }.to_body(),
            }))
        }
        MessageChange::React { by, emoji, on, .. } => {
            if target.deleted {
                return Err(ErrorCode::NotFound);
            }
            let current = target
                .reactions
                .iter()
                .find(|(_, users)| users.contains(by))
                .map(|(e, _)| e.clone());
            let wanted = if *on {
                Some(emoji.clone())
            } else if current.as_deref() == Some(emoji.as_str()) {
                None
            } else {
                return Ok(None);
            };
            if wanted == current {
                return Ok(None);
            }
            let mut map = target.reactions.clone();
            for users in map.values_mut() {
                users.retain(|u| u != by);
            }
            if let Some(e) = &wanted {
                let users = map.entry(e.clone()).or_default();
                users.push(*by);
                users.sort_unstable();
            }
            map.retain(|_, users| !users.is_empty());
            Ok(Some(Plan {
                write: Write::Reactions(map),
                notice: SystemNotice::ReactionChanged {
                    emoji: wanted,
                    previous: current,
                    target_seq: seq,
                    user_id: *by,
                }
                .to_body(),
            }))
        }
    }
}
