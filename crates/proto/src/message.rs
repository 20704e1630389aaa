//! Chat messages: kinds, the stored/delivered record, and body validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::ids::{ConversationId, Millis, Seq, UserId};

/// What a message carries; decides the shape of `body` (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// `{ "text": str, "mentions"?: [user_id] }`
    Text,
    /// `{ "media_id", "width", "height", "caption"? }`
    Image,
    /// `{ "media_id", "duration_ms" }`
    Voice,
    /// `{ "media_id", "name", "size", "mime" }`
    File,
    /// Made by the server only (member joined, title changed, …).
    System,
    /// `{ "ciphertext": base64, … }`: end-to-end encrypted, opaque to the server.
    Encrypted,
}

impl MessageKind {
    /// The wire name, e.g. `"text"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Voice => "voice",
            MessageKind::File => "file",
            MessageKind::System => "system",
            MessageKind::Encrypted => "encrypted",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<MessageKind> {
        Some(match s {
            "text" => MessageKind::Text,
            "image" => MessageKind::Image,
            "voice" => MessageKind::Voice,
            "file" => MessageKind::File,
            "system" => MessageKind::System,
            "encrypted" => MessageKind::Encrypted,
            _ => return None,
        })
    }
}

/// A committed message, as stored, paged in history and pushed in `message`
/// frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Its place in the conversation (gapless, from 1).
    pub seq: Seq,
    /// Who sent it.
    pub sender_id: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// What it carries.
    pub kind: MessageKind,
    /// Kind-specific content.
    pub body: Value,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts: Millis,
    /// History pages of groups only, on the caller's own messages: how many
    /// other members have read it. Never in `message` frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_by: Option<u32>,
    /// History and sync only: when the body was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Millis>,
    /// History and sync only: deleted for everyone (the body is `{}`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// History and sync only: who reacted with what (`{emoji: [user_id]}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, Vec<UserId>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Most user ids in a text message's `mentions`.
pub const MAX_MENTIONS: usize = 100;

/// Limits applied to message bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest `text` (and caption) in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Largest encoded body in bytes (any kind).
    pub max_body_bytes: usize,
}

/// Checks that a client-sent body fits its kind and the limits.
///
/// `encoded_len` is the length of the body as JSON, which the caller has
/// anyway. Clients may not send `system` messages.
pub fn validate_body(
    kind: MessageKind,
    body: &Value,
    encoded_len: usize,
    limits: &BodyLimits,
) -> Result<(), ApiError> {
    if encoded_len > limits.max_body_bytes {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("message body is over {} bytes", limits.max_body_bytes),
        ));
    }
    let obj = body
        .as_object()
        .ok_or_else(|| bad("message body must be a json object"))?;
    match kind {
        MessageKind::Text => {
            let text = obj
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("text message needs a string field \"text\""))?;
            if text.trim().is_empty() {
                return Err(bad("text must not be empty"));
            }
            if text.len() > limits.max_text_bytes {
                return Err(ApiError::new(
                    ErrorCode::MessageTooLarge,
                    format!("text is over {} bytes", limits.max_text_bytes),
                ));
            }
            if let Some(m) = obj.get("mentions") {
                let ok = m
                    .as_array()
                    .is_some_and(|ids| ids.iter().all(|id| id.as_i64().is_some()));
                if !ok {
                    return Err(bad("mentions must be an array of user ids"));
                }
                if m.as_array().is_some_and(|ids| ids.len() > MAX_MENTIONS) {
                    return Err(bad("a message may mention at most 100 users"));
                }
            }
        }
        MessageKind::Image | MessageKind::Voice | MessageKind::File => {
            if obj.get("media_id").and_then(Value::as_str).is_none() {
                return Err(bad("media messages need a string field \"media_id\""));
            }
            if let Some(caption) = obj.get("caption").and_then(Value::as_str) {
                if caption.len() > limits.max_text_bytes {
                    return Err(ApiError::new(
                        ErrorCode::MessageTooLarge,
                        format!("caption is over {} bytes", limits.max_text_bytes),
                    ));
                }
            }
        }
        MessageKind::Encrypted => {
            if obj.get("ciphertext").and_then(Value::as_str).is_none() {
                return Err(bad("encrypted messages need a string field \"ciphertext\""));
            }
            crate::e2ee::encrypted_header(body)?;
        }
        MessageKind::System => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "system messages are made by the server only",
            ))
        }
    }
    Ok(())
}

fn bad(msg: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: BodyLimits = BodyLimits {
        max_text_bytes: 10,
        max_body_bytes: 100,
    };

    fn check(kind: MessageKind, body: Value) -> Result<(), ErrorCode> {
        let len = body.to_string().len();
        validate_body(kind, &body, len, &LIMITS).map_err(|e| e.code)
    }

    #[test]
    fn body_validation_table() {
        use ErrorCode::*;
        use MessageKind::*;
        let cases: Vec<(MessageKind, Value, Result<(), ErrorCode>)> = vec![
            (Text, json!({"text": "hi"}), Ok(())),
            (Text, json!({"text": "0123456789"}), Ok(())),
            (Text, json!({"text": "0123456789x"}), Err(MessageTooLarge)),
            (Text, json!({"text": "   "}), Err(BadRequest)),
            (Text, json!({"txt": "hi"}), Err(BadRequest)),
            (Text, json!("hi"), Err(BadRequest)),
            (Text, json!({"text": "hi", "mentions": [1, 2]}), Ok(())),
            (
                Text,
                json!({"text": "hi", "mentions": ["a"]}),
                Err(BadRequest),
            ),
            (
                Text,
                json!({"text": "hi", "pad": "x".repeat(200)}),
                Err(MessageTooLarge),
            ),
            (
                Image,
                json!({"media_id": "m1", "width": 1, "height": 1}),
                Ok(()),
            ),
            (File, json!({"name": "a"}), Err(BadRequest)),
            (Encrypted, json!({"ciphertext": "AAAA"}), Ok(())),
            (System, json!({"text": "x"}), Err(Forbidden)),
        ];
        for (kind, body, want) in cases {
            assert_eq!(check(kind, body.clone()), want, "{kind:?} {body}");
        }
    }

    #[test]
    fn kind_names_round_trip() {
        use MessageKind::*;
        for k in [Text, Image, Voice, File, System, Encrypted] {
            assert_eq!(MessageKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).expect("serialize"),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
