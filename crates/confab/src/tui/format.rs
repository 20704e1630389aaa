//! Plain-text renderings of message bodies, times and sizes (no IO, no
//! styling), shared by the view and the tests.

use confab_sdk::proto::ids::Millis;
use confab_sdk::{MessageKind, MessageRecord, UserId};
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
        MessageKind::Encrypted => "[encrypted message]".to_owned(),
    }
}

/// One sentence for a `system` notice's body (`{"event": …, …}`).
pub fn system_text(body: &Value, sender: UserId, name: &dyn Fn(UserId) -> String) -> String {
    let id = |key: &str| body.get(key).and_then(Value::as_i64);
    let by = name(id("by_user_id").unwrap_or(sender));
    let event = str_field(body, "event").unwrap_or("");
    match event {
        "group_created" => format!(
            "{by} created the group {}",
            str_field(body, "title").unwrap_or("")
        ),
        "member_joined" => {
            let users: Vec<String> = body
                .get("user_ids")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_i64).map(name).collect())
                .unwrap_or_default();
            format!("{by} added {}", users.join(", "))
        }
        "member_left" => {
            let who = name(id("user_id").unwrap_or(sender));
            if str_field(body, "reason") == Some("removed") {
                format!("{by} removed {who}")
            } else {
                format!("{who} left")
            }
        }
        "role_changed" => format!(
            "{} is now {}",
            name(id("user_id").unwrap_or(sender)),
            str_field(body, "role").unwrap_or("member")
        ),
        "conversation_updated" => match str_field(body, "title") {
            Some(t) => format!("{by} renamed the group to {t}"),
            None => format!("{by} changed the group"),
        },
        "message_edited" => format!("{by} edited a message"),
        "message_deleted" => format!("{by} deleted a message"),
        "reaction_changed" => match str_field(body, "emoji") {
            Some(e) => format!("{by} reacted {e}"),
            None => format!("{by} removed a reaction"),
        },
        "" => "(notice)".to_owned(),
        other => format!("{by}: {other}"),
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
    }
}
