//! Checking a send before it is queued for commit; shared by the WebSocket
//! `send` frame and `POST /v1/conversations/{id}/messages`.

use confab_proto::message::{validate_body, BodyLimits};
use confab_proto::validate::check_client_msg_id;
use confab_proto::{ApiError, ConversationId, MessageKind, UserId};
use confab_store::NewMessage;
use serde_json::Value;

use crate::config::Limits;

/// Validates a send and turns it into a store write (the committer stamps
/// `ts`). Membership is checked at commit time, inside the transaction.
pub fn prepare_send(
    limits: &Limits,
    sender_id: UserId,
    conversation_id: ConversationId,
    client_msg_id: String,
    kind: MessageKind,
    body: &Value,
) -> Result<NewMessage, ApiError> {
    check_client_msg_id(&client_msg_id)?;
    let body_json = serde_json::to_string(body).map_err(|e| {
        ApiError::new(
            confab_proto::ErrorCode::BadRequest,
            format!("unreadable body: {e}"),
        )
    })?;
    let body_limits = BodyLimits {
        max_text_bytes: limits.max_text_bytes,
        max_body_bytes: limits.max_frame_bytes,
    };
    validate_body(kind, body, body_json.len(), &body_limits)?;
    let mentions = match kind {
        MessageKind::Text => body
            .get("mentions")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(NewMessage {
        conversation_id,
        sender_id,
        client_msg_id,
        kind,
        body: body_json,
        ts: 0,
        mentions,
    })
}
