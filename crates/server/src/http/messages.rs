//! Changes to committed messages: edits, deletion for everyone, reactions;
//! history pages around a seq; and the reply check on sends.
//!
//! Every change goes through the committer as a `WriteOp::Message`, so it
//! takes its place in the conversation's seq order with a `system` notice
//! (`message_edited`, `message_deleted`, `reaction_changed`); the committer
//! delivers the notice and a matching `event` frame.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_proto::api::{EditMessageRequest, MessagePage};
use confab_proto::message::{validate_body, BodyLimits};
use confab_proto::{ConversationId, ErrorCode, MessageKind, MessageRecord, Seq, UserId};
use confab_store::{HistoryQuery, MessageChange, MessageChangeOutcome, WriteOp, WriteOutcome};
use serde_json::Value;

use super::ApiJson;
use crate::auth::AuthUser;
use crate::chat::membership::require_member;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::refusal::{refusal, WriteKind};
use crate::state::AppState;

/// Commits a message change; refusals come back as errors.
async fn apply(state: &AppState, change: MessageChange) -> AppResult<MessageChangeOutcome> {
    match state
        .committer
        .commit(WriteOp::Message { change, ts: 0 })
        .await?
    {
        WriteOutcome::MessageChanged(done) => Ok(*done),
        WriteOutcome::Rejected(code) => Err(refusal(WriteKind::MessageChange, code).into()),
        _ => Err(AppError::new(
            ErrorCode::Internal,
            "unexpected commit outcome",
        )),
    }
}

fn check_seq(seq: Seq) -> AppResult<()> {
    if seq < 1 {
        return Err(AppError::not_found("message"));
    }
    Ok(())
}

/// `PATCH /v1/conversations/{id}/messages/{seq}` `{body}`: the author edits
/// the text (text messages) or the caption (media messages).
pub async fn edit(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, seq)): ApiPath<(ConversationId, Seq)>,
    ApiJson(req): ApiJson<EditMessageRequest>,
) -> AppResult<Json<MessageRecord>> {
    check_seq(seq)?;
    let limits = &state.config.limits;
    let encoded = serde_json::to_string(&req.body)
        .map_err(|e| AppError::bad_request(format!("unreadable body: {e}")))?;
    let obj = req
        .body
        .as_object()
        .ok_or_else(|| AppError::bad_request("body must be a json object"))?;
    let body_limits = BodyLimits {
        max_text_bytes: limits.max_text_bytes,
        max_body_bytes: limits.max_frame_bytes,
    };
    if obj.contains_key("text") {
        validate_body(MessageKind::Text, &req.body, encoded.len(), &body_limits)?;
    } else {
        match obj.get("caption") {
            None | Some(Value::Null) => {}
            Some(Value::String(c)) if c.len() <= limits.max_text_bytes => {}
            Some(Value::String(_)) => {
                return Err(AppError::new(
                    ErrorCode::MessageTooLarge,
                    format!("caption is over {} bytes", limits.max_text_bytes),
                ))
            }
            Some(_) => return Err(AppError::bad_request("caption must be a string")),
        }
    }
    crate::chat::e2ee::refuse_plain_change(state.store.as_ref(), id).await?;
    crate::chat::blocks::check_direct_change(state.store.as_ref(), id, who.user_id).await?;
    let done = apply(
        &state,
        MessageChange::Edit {
            conversation_id: id,
            seq,
            by: who.user_id,
            body: req.body,
        },
    )
    .await?;
    Ok(Json(done.target))
}

/// `DELETE /v1/conversations/{id}/messages/{seq}`: deletion for everyone
/// (the author, or a group owner/admin). 204, also when already deleted.
pub async fn delete(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, seq)): ApiPath<(ConversationId, Seq)>,
) -> AppResult<StatusCode> {
    check_seq(seq)?;
    apply(
        &state,
        MessageChange::Delete {
            conversation_id: id,
            seq,
            by: who.user_id,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Most bytes in a reaction emoji.
pub const MAX_EMOJI_BYTES: usize = 16;

fn check_emoji(emoji: &str) -> AppResult<()> {
    if emoji.is_empty()
        || emoji.len() > MAX_EMOJI_BYTES
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AppError::bad_request(
            "a reaction is 1-16 bytes without spaces or control characters",
        ));
    }
    Ok(())
}

async fn react(
    state: &AppState,
    who: &AuthUser,
    id: ConversationId,
    seq: Seq,
    emoji: String,
    on: bool,
) -> AppResult<Json<MessageRecord>> {
    check_seq(seq)?;
    check_emoji(&emoji)?;
    crate::chat::e2ee::refuse_plain_change(state.store.as_ref(), id).await?;
    crate::chat::blocks::check_direct_change(state.store.as_ref(), id, who.user_id).await?;
    let done = apply(
        state,
        MessageChange::React {
            conversation_id: id,
            seq,
            by: who.user_id,
            emoji,
            on,
        },
    )
    .await?;
    Ok(Json(done.target))
}

/// `PUT /v1/conversations/{id}/messages/{seq}/reactions/{emoji}`: my
/// reaction is now this one (replacing any other of mine).
pub async fn react_on(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, seq, emoji)): ApiPath<(ConversationId, Seq, String)>,
) -> AppResult<Json<MessageRecord>> {
    react(&state, &who, id, seq, emoji, true).await
}

/// `DELETE /v1/conversations/{id}/messages/{seq}/reactions/{emoji}`: takes
/// my reaction off if it is this one.
pub async fn react_off(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, seq, emoji)): ApiPath<(ConversationId, Seq, String)>,
) -> AppResult<Json<MessageRecord>> {
    react(&state, &who, id, seq, emoji, false).await
}

/// A history page centred on `seq`: up to half the limit before it, the
/// rest from it on. Two store reads.
pub async fn around(
    state: &AppState,
    id: ConversationId,
    user: UserId,
    seq: Seq,
    limit: u32,
) -> AppResult<Json<MessagePage>> {
    require_member(state.store.as_ref(), id, user).await?;
    let before = (limit / 2).max(1);
    let after = limit.saturating_sub(before).max(1);
    let (mut older, more_before) = state
        .store
        .history(
            id,
            user,
            HistoryQuery {
                before_seq: Some(seq),
                limit: before,
                ..Default::default()
            },
        )
        .await?;
    let (newer, more_after) = state
        .store
        .history(
            id,
            user,
            HistoryQuery {
                after_seq: Some(seq.max(1) - 1),
                limit: after,
                ..Default::default()
            },
        )
        .await?;
    older.extend(newer);
    Ok(Json(MessagePage {
        messages: older,
        has_more: more_after,
        has_more_before: Some(more_before),
    }))
}
