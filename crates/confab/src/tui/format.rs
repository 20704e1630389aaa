//! Plain-text renderings of message bodies, times and sizes (no IO, no
//! styling), shared by the view and the tests.

use confab_sdk::proto::ids::Millis;
use confab_sdk::{E2eeContent, MessageKind, MessageRecord, SystemNotice, UserId};
use serde_json::Value;

/// `HH:MM` (UTC) of a timestamp in milliseconds since the Unix epoch.
pub fn clock(ts: Millis) -> String {
    let minutes = ts.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A byte count for people: `512 B`, `1.2 KB`, `3.4 MB`, `1.0 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn str_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

fn u64_field(body: &Value, key: &str) -> Option<u64> {
    body.get(key).and_then(Value::as_u64)
}

fn caption(body: &Value) -> String {
    str_field(body, "caption")
        .map(|c| format!(" {c}"))
        .unwrap_or_default()
}

/// What a message says, as one line of text: the text of a text message,
/// `[image 640x480]`, `[voice 3s]`, `[file name.pdf 1.2 MB]`, a sentence
/// for a system notice (`name` turns user ids into names), `[deleted]`.
pub fn body_text(msg: &MessageRecord, name: &dyn Fn(UserId) -> String) -> String {
    if msg.deleted {
        return "[deleted]".to_owned();
    }
    let body = &msg.body;
    match msg.kind {
        MessageKind::Text => str_field(body, "text").unwrap_or_default().to_owned(),
        MessageKind::Image => format!(
            "[image {}x{}]{}",
            u64_field(body, "width").unwrap_or(0),
            u64_field(body, "height").unwrap_or(0),
            caption(body)
        ),
        MessageKind::Voice => format!(
            "[voice {}s]{}",
            u64_field(body, "duration_ms").unwrap_or(0).div_ceil(1000),
            caption(body)
        ),
        MessageKind::File => format!(
            "[file {} {}]{}",
            str_field(body, "name").unwrap_or("file"),
            size(u64_field(body, "size").unwrap_or(0)),
            caption(body)
        ),
        MessageKind::System => system_text(body, msg.sender_id, name),
        MessageKind::Encrypted => encrypted_text(body),
    }
}

/// What an end-to-end encrypted message shows before (or without) this
/// device's reading of it: never nothing; a commit is a key change, not
/// something someone said.
pub fn encrypted_text(body: &Value) -> String {
    match str_field(body, "mls") {
        Some("commit") | Some("proposal") => "🔒 [encryption keys changed]".to_owned(),
        _ => "🔒 [encrypted: this device has no encryption key]".to_owned(),
    }
}

/// What an `encrypted` message shows given what this device made of it
/// (`seen`, from its MLS state): the plaintext rendered like a plain
/// message of its kind, a key change, or why it cannot be read. `None`
/// while it is being decrypted (or, without a device key, the
/// placeholder of [`encrypted_text`]); the P2P runner's bodies of
/// messages its peer cannot open (yet) say why: `{"waiting": reason}`,
/// `{"unreadable": reason}`.
pub fn encrypted_shown(
    msg: &MessageRecord,
    seen: Option<&E2eeContent>,
    can_decrypt: bool,
    name: &dyn Fn(UserId) -> String,
) -> String {
    if msg.deleted {
        return "[deleted]".to_owned();
    }
    match seen {
        Some(E2eeContent::Message { kind, body }) => match MessageKind::parse(kind) {
            Some(k) if k != MessageKind::Encrypted && k != MessageKind::System => {
                let plain = MessageRecord {
                    kind: k,
                    body: body.clone(),
                    ..msg.clone()
                };
                body_text(&plain, name)
            }
            _ => format!("🔒 [an encrypted message of unknown kind {kind:?}]"),
        },
        Some(E2eeContent::Notice { body }) => system_text(body, msg.sender_id, name),
        Some(E2eeContent::Commit { .. }) | Some(E2eeContent::Proposal) => {
            "🔒 [encryption keys changed]".to_owned()
        }
        Some(E2eeContent::Joined { .. }) => "🔒 [this device joined the encryption]".to_owned(),
        Some(E2eeContent::Removed) => {
            "🔒 [this device was removed: what follows cannot be read]".to_owned()
        }
        Some(E2eeContent::BeforeJoin) => "🔒 [sent before this device joined]".to_owned(),
        Some(E2eeContent::Failed { reason }) => format!("🔒 [cannot decrypt: {reason}]"),
        // A P2P message this device has not opened (its runner says why).
        None if str_field(&msg.body, "waiting").is_some() => format!(
            "🔒 [waiting: {}]",
            str_field(&msg.body, "waiting").unwrap_or_default()
        ),
        None if str_field(&msg.body, "unreadable").is_some() => format!(
            "🔒 [unreadable: {}]",
            str_field(&msg.body, "unreadable").unwrap_or_default()
        ),
        None if can_decrypt => match str_field(&msg.body, "mls") {
            Some("commit") | Some("proposal") => "🔒 [encryption keys changed]".to_owned(),
            _ => "🔒 decrypting…".to_owned(),
        },
        None => encrypted_text(&msg.body),
    }
}

/// One sentence for a `system` notice's body.
pub fn system_text(body: &Value, sender: UserId, name: &dyn Fn(UserId) -> String) -> String {
    let Ok(notice) = serde_json::from_value::<SystemNotice>(body.clone()) else {
        return "(notice)".to_owned();
    };
    match notice {
        SystemNotice::GroupCreated { by_user_id, title } => {
            format!("{} created the group {title}", name(by_user_id))
        }
        SystemNotice::MemberJoined {
            by_user_id,
            user_ids,
        } => {
            let users: Vec<String> = user_ids.into_iter().map(name).collect();
            format!("{} added {}", name(by_user_id), users.join(", "))
        }
        SystemNotice::MemberLeft {
            by_user_id,
            reason,
            user_id,
        } => {
            if reason == "removed" {
                format!("{} removed {}", name(by_user_id), name(user_id))
            } else {
                format!("{} left", name(user_id))
            }
        }
        SystemNotice::RoleChanged { role, user_id, .. } => {
            format!("{} is now {role}", name(user_id))
        }
        SystemNotice::ConversationUpdated {
            by_user_id, title, ..
        } => match title {
            Some(t) => format!("{} renamed the group to {t}", name(by_user_id)),
            None => format!("{} changed the group", name(by_user_id)),
        },
        SystemNotice::MessageEdited { .. } => format!("{} edited a message", name(sender)),
        SystemNotice::MessageDeleted { .. } => format!("{} deleted a message", name(sender)),
        SystemNotice::ReactionChanged { emoji, user_id, .. } => match emoji {
            Some(e) => format!("{} reacted {e}", name(user_id)),
            None => format!("{} removed a reaction", name(user_id)),
        },
        SystemNotice::CallEnded {
            duration_ms,
            media,
            outcome,
            ..
        } => {
            let kind = if media == "video" {
                "video call"
            } else {
                "call"
            };
            match outcome.as_str() {
                "answered" => format!(
                    "{kind} with {} ended, {}",
                    name(sender),
                    call_length(duration_ms)
                ),
                "declined" => format!("{kind} from {} declined", name(sender)),
                "busy" => format!("{kind} from {}: busy", name(sender)),
                _ => format!("missed {kind} from {}", name(sender)),
            }
        }
    }
}

/// A call's length as `m:ss` (or `h:mm:ss`).
fn call_length(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_clocks() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1_234), "1.2 KB");
        assert_eq!(size(3_400_000), "3.4 MB");
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock((13 * 60 + 7) * 60_000), "13:07");
        assert_eq!(call_length(65_400), "1:05");
        assert_eq!(call_length(3_725_000), "1:02:05");
    }

    #[test]
    fn encrypted_messages_say_what_they_are() {
        let commit = serde_json::json!({"ciphertext": "AA", "mls": "commit", "epoch": 1});
        let said = serde_json::json!({"ciphertext": "AA", "mls": "application", "epoch": 1});
        assert_eq!(encrypted_text(&commit), "🔒 [encryption keys changed]");
        assert_eq!(
            encrypted_text(&said),
            "🔒 [encrypted: this device has no encryption key]"
        );
        assert!(!encrypted_text(&said).contains("AA"));
    }

    #[test]
    fn call_history_lines() {
        let name = |u: UserId| format!("user{u}");
        let line = |outcome: &str, ms: u64| {
            let body = serde_json::json!({"event": "call_ended", "call_id": "c", "duration_ms": ms, "media": "video", "outcome": outcome});
            system_text(&body, 2, &name)
        };
        assert_eq!(
            line("answered", 61_000),
            "video call with user2 ended, 1:01"
        );
        assert_eq!(line("missed", 0), "missed video call from user2");
        assert_eq!(line("declined", 0), "video call from user2 declined");
    }
}
