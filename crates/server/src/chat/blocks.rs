//! Block rules applied before a write or a signal reaches anyone: who may
//! ring whom, who may be put into a group, and who may change messages in
//! a direct conversation. (Direct sends are checked inside the commit, by
//! the store.) Every rule is written down in docs/protocol.md.

use confab_proto::api::ConversationKind;
use confab_proto::{ApiError, ConversationId, ErrorCode, UserId};
use confab_store::Store;

use crate::error::store_error;

fn blocked(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Blocked,
        format!("{what}: one of you blocked the other"),
    )
}

/// A `call` signal from `from` to `to` with a payload of `payload_bytes`:
/// allowed only between two users who share a conversation now, with no
/// block either way, and with a payload of at most `max_payload_bytes`.
pub async fn check_call(
    store: &dyn Store,
    from: UserId,
    to: UserId,
    payload_bytes: usize,
    max_payload_bytes: usize,
) -> Result<(), ApiError> {
    if payload_bytes > max_payload_bytes {
        return Err(ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("call payload is over {max_payload_bytes} bytes"),
        ));
    }
    if from == to {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "to_user_id must be another user",
        ));
    }
    if !store
        .share_conversation(from, to)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "you can call only people you share a conversation with",
        ));
    }
    if store.blocked_either(from, to).await.map_err(store_error)? {
        return Err(blocked("this user cannot be called"));
    }
    Ok(())
}

/// `by` puts `users` into a group (creating it or adding members): refused
/// as a whole if any of them has a block either way with `by`.
pub async fn check_group_additions(
    store: &dyn Store,
    by: UserId,
    users: &[UserId],
) -> Result<(), ApiError> {
    let hits = store.blocks_among(by, users).await.map_err(store_error)?;
    if hits.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = hits.iter().map(ToString::to_string).collect();
    Err(blocked(&format!(
        "user {} cannot be added to a group by you",
        ids.join(", ")
    )))
}

/// `by` edits or reacts to a message in conversation `id`: in a direct
/// conversation, refused when either of the two blocked the other, like a
/// send. (Deleting one's own message stays allowed: taking words back
/// harms nobody.) Anything else is left to the commit's own checks.
pub async fn check_direct_change(
    store: &dyn Store,
    id: ConversationId,
    by: UserId,
) -> Result<(), ApiError> {
    let Some(view) = store.conversation_for(id, by).await.map_err(store_error)? else {
        return Ok(());
    };
    if view.kind != ConversationKind::Direct {
        return Ok(());
    }
    let other = view.members.iter().map(|m| m.user_id).find(|&u| u != by);
    if let Some(other) = other {
        if store.blocked_either(by, other).await.map_err(store_error)? {
            return Err(ApiError::new(ErrorCode::Blocked, crate::refusal::BLOCKED));
        }
    }
    Ok(())
}
