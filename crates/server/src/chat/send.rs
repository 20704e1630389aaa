//! A send, from request to commit queue: the body checked against its kind
//! and the limits, the reply target and the media checked against the
//! store, then the write queued at the committer. The WebSocket `send`
//! frame and `POST /v1/conversations/{id}/messages` both go through
//! [`queue_send`]; membership is checked at commit time, inside the
//! transaction.

use confab_bus::ConnectionId;
use confab_proto::message::{validate_body, BodyLimits};
use confab_proto::validate::check_client_msg_id;
use confab_proto::{ApiError, ConversationId, ErrorCode, MessageKind, UserId};
use confab_store::{NewMessage, Store, WriteOp};
use serde_json::Value;

use crate::committer::{Committer, ReplyTo};
use crate::config::Limits;

/// Validates a send and turns it into a store write (the committer stamps
/// `ts`). Membership is checked at commit time, inside the transaction.
fn prepare_send(
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

/// Everything a send says.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// Who sends.
    pub sender_id: UserId,
    /// Where to.
    pub conversation_id: ConversationId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// Message kind.
    pub kind: MessageKind,
    /// Message body.
    pub body: Value,
}

/// Checks a send and queues it at the committer; the outcome goes to
/// `reply` (an ack or error frame for a connection, or a waiting HTTP
/// handler). `origin` is the sending connection, which gets the ack rather
/// than an echo.
pub async fn queue_send(
    store: &dyn Store,
    committer: &Committer,
    limits: &Limits,
    req: SendRequest,
    reply: ReplyTo,
    origin: Option<ConnectionId>,
) -> Result<(), ApiError> {
    let msg = prepare_send(
        limits,
        req.sender_id,
        req.conversation_id,
        req.client_msg_id,
        req.kind,
        &req.body,
    )?;
    check_reply(store, &msg).await?;
    super::media::check_message_media(store, &msg).await?;
    super::e2ee::check_encrypted_message(store, &msg).await?;
    committer.submit(WriteOp::Append(msg), reply, origin).await
}

/// Checks a send's `reply_to` (text messages): a positive seq of a message
/// in the same conversation that the sender can see and that is not
/// deleted. Done with one store read before the send is queued, not inside
/// the commit (a target deleted in between still gets the reply). A sender
/// who is not a member is left to the commit, which refuses them.
async fn check_reply(store: &dyn Store, msg: &NewMessage) -> Result<(), ApiError> {
    if msg.kind != MessageKind::Text {
        return Ok(());
    }
    let Ok(body) = serde_json::from_str::<Value>(&msg.body) else {
        return Ok(());
    };
    let Some(target) = body.get("reply_to") else {
        return Ok(());
    };
    let bad = || {
        ApiError::new(
            ErrorCode::BadRequest,
            "reply_to must be the seq of a message you can see in this conversation",
        )
    };
    let seq = target.as_i64().filter(|s| *s >= 1).ok_or_else(bad)?;
    let found = store
        .message_for(msg.conversation_id, msg.sender_id, seq)
        .await
        .map_err(crate::error::store_error)?;
    match found {
        Some(m) if !m.deleted && m.kind != MessageKind::System => Ok(()),
        _ => {
            let member = store
                .member(msg.conversation_id, msg.sender_id)
                .await
                .map_err(crate::error::store_error)?;
            if member.is_some() {
                Err(bad())
            } else {
                Ok(())
            }
        }
    }
}
