//! The rules of edits, deletions for everyone and reactions ([`plan`],
//! shared with PostgreSQL). The writes themselves run on the writer thread
//! (`batch_changes.rs`); reading one message is `conversations::message_for`
//! (`src/shared/conversations.rs`).

use confab_proto::SystemNotice;
use std::collections::BTreeMap;

use confab_proto::error::ErrorCode;
use confab_proto::{MessageKind, MessageRecord, Millis, UserId};
use serde_json::Value;

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

pub(crate) struct Plan {
    pub(crate) write: Write,
    /// Body of the `system` notice.
    pub(crate) notice: Value,
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
