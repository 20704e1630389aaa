//! Conversations and their messages over HTTP.

use crate::openapi::{code, Errors};
use std::sync::Arc;

use crate::events;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_bus::{Delivery, Priority};
use confab_proto::api::{
    Conversation, ConversationKind, ConversationList, CreateConversationRequest, MessagePage,
    ReadRequest, SendMessageRequest, SendMessageResponse,
};
use confab_proto::{ConversationId, ErrorCode, Event, Seq, ServerFrame, UserId};
use confab_store::{HistoryQuery, WriteOp, WriteOutcome};
use serde::Deserialize;

use super::{ApiJson, ApiQuery};
use crate::auth::AuthUser;
use crate::chat::membership::require_member;
use crate::chat::send::{queue_send, SendRequest};
use crate::clock::now_millis;
use crate::committer::ReplyTo;
use crate::config::DirectMessages;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::refusal::{refusal, WriteKind};
use crate::state::AppState;

/// `POST /v1/conversations`: get-or-create direct, or create a group.
#[utoipa::path(
    post,
    path = "/conversations",
    tag = "conversations",
    security(("bearer" = [])),
    request_body = CreateConversationRequest,
    responses(
        (status = 201, description = "A new group, or a new direct conversation", body = Conversation),
        (status = 200, description = "The direct conversation with this user, which existed", body = Conversation),
        Errors<(code::NotFound, code::Blocked, code::NotFriends, code::GroupFull)>,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    who: AuthUser,
    ApiJson(req): ApiJson<CreateConversationRequest>,
) -> AppResult<(StatusCode, Json<Conversation>)> {
    let (id, created) = match req {
        CreateConversationRequest::Direct { user_id, encrypted } => {
            if user_id == who.user_id {
                return Err(AppError::bad_request(
                    "a direct conversation needs another user",
                ));
            }
            state
                .store
                .user(user_id)
                .await?
                .ok_or_else(|| AppError::not_found("user"))?;
            // A new conversation announces itself to the other user: not
            // to someone with a block either way, nor to a stranger when
            // only friends may message.
            if state.store.blocked_either(who.user_id, user_id).await? {
                return Err(AppError::new(ErrorCode::Blocked, crate::refusal::BLOCKED));
            }
            if state.config.chat.direct_messages == DirectMessages::Friends
                && !state
                    .store
                    .friend_ids(who.user_id)
                    .await?
                    .contains(&user_id)
            {
                return Err(AppError::new(
                    ErrorCode::NotFriends,
                    crate::refusal::NOT_FRIENDS,
                ));
            }
            state
                .store
                .get_or_create_direct(who.user_id, user_id, encrypted, now_millis())
                .await?
        }
        CreateConversationRequest::Group {
            title,
            member_ids,
            encrypted,
        } => {
            let title = title.trim();
            confab_proto::validate::check_group_title(title)?;
            let mut distinct: Vec<UserId> = member_ids
                .iter()
                .copied()
                .filter(|&m| m != who.user_id)
                .collect();
            distinct.sort_unstable();
            distinct.dedup();
            let max = state.config.chat.max_group_members;
            if distinct.len() as i64 + 1 > max {
                return Err(AppError::new(
                    ErrorCode::GroupFull,
                    format!("a group may have at most {max} members"),
                ));
            }
            let known = state.store.presence_records(&distinct).await?;
            if known.len() != distinct.len() {
                return Err(AppError::not_found("user"));
            }
            crate::chat::blocks::check_group_additions(
                state.store.as_ref(),
                who.user_id,
                &distinct,
            )
            .await?;
            let id = state
                .store
                .create_group(who.user_id, title, &distinct, encrypted, now_millis())
                .await?;
            (id, true)
        }
    };
    let view = state
        .store
        .conversation_for(id, who.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    if created {
        announce_new_conversation(&state, &view, who.user_id).await;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Tells the members' devices that a conversation now includes them.
async fn announce_new_conversation(state: &AppState, view: &Conversation, creator: UserId) {
    let users: Arc<[UserId]> = if view.members.len() as i64 == view.member_count {
        view.members.iter().map(|m| m.user_id).collect()
    } else {
        match state.store.member_ids(view.id).await {
            Ok(ids) => Arc::from(ids),
            Err(e) => {
                tracing::warn!(error = %e, "could not announce conversation");
                return;
            }
        }
    };
    let event = Event::ConversationAdded {
        by_user_id: creator,
        conversation_id: view.id,
    };
    events::publish(state.bus.as_ref(), users.clone(), event).await;
    // A group starts with its `group_created` notice (seq 1): deliver it
    // live like any message, so clients need no sync to see it.
    if view.kind == ConversationKind::Group {
        let first = HistoryQuery {
            after_seq: Some(0),
            before_seq: None,
            limit: 1,
        };
        match state.store.history(view.id, creator, first).await {
            Ok((messages, _)) => {
                for m in messages {
                    let frame = ServerFrame::Message(m).encode();
                    let live = Delivery::to(users.clone(), Priority::Message, frame);
                    events::send(state.bus.as_ref(), live).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the group_created notice"),
        }
    }
}

/// `GET /v1/conversations`.
#[utoipa::path(
    get,
    path = "/conversations",
    tag = "conversations",
    security(("bearer" = [])),
    responses((status = 200, description = "My conversations, newest activity first", body = ConversationList)),
)]
pub async fn list(
    State(state): State<AppState>,
    who: AuthUser,
) -> AppResult<Json<ConversationList>> {
    let conversations = state.store.conversations_for(who.user_id).await?;
    Ok(Json(ConversationList { conversations }))
}

/// `GET /v1/conversations/{id}`.
#[utoipa::path(
    get,
    path = "/conversations/{id}",
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    responses(
        (status = 200, description = "The conversation as I see it", body = Conversation),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn get_one(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
) -> AppResult<Json<Conversation>> {
    require_member(state.store.as_ref(), id, who.user_id).await?;
    let view = state
        .store
        .conversation_for(id, who.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    Ok(Json(view))
}

/// Query of the history endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Messages before this seq (newest of them).
    before_seq: Option<Seq>,
    /// Messages after this seq (oldest of them).
    after_seq: Option<Seq>,
    /// A page centred on this seq (`has_more_before` says what lies before).
    around_seq: Option<Seq>,
    /// Page size (default 50, at most `limits.history_page_max`).
    limit: Option<u32>,
}

/// `GET /v1/conversations/{id}/messages?before_seq=&after_seq=&around_seq=&limit=`.
#[utoipa::path(
    get,
    path = "/conversations/{id}/messages",
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id"), HistoryParams),
    responses(
        (status = 200, description = "A page of history, ascending seq", body = MessagePage),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(p): ApiQuery<HistoryParams>,
) -> AppResult<Json<MessagePage>> {
    let max = state.config.limits.history_page_max;
    if let Some(seq) = p.around_seq {
        let limit = p.limit.unwrap_or(50).clamp(1, max);
        return super::messages::around(&state, id, who.user_id, seq, limit).await;
    }
    require_member(state.store.as_ref(), id, who.user_id).await?;
    let query = HistoryQuery {
        before_seq: p.before_seq,
        after_seq: p.after_seq,
        limit: p.limit.unwrap_or(50).clamp(1, max),
    };
    let (messages, has_more) = state.store.history(id, who.user_id, query).await?;
    Ok(Json(MessagePage {
        messages,
        has_more,
        has_more_before: None,
    }))
}

/// `POST /v1/conversations/{id}/messages`: same semantics as the WebSocket
/// `send` (durable before the answer; resends return the original seq).
#[utoipa::path(
    post,
    path = "/conversations/{id}/messages",
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    request_body = SendMessageRequest,
    responses(
        (status = 201, description = "Committed", body = SendMessageResponse),
        (status = 200, description = "A resend of a committed message: its original seq", body = SendMessageResponse),
        Errors<(code::Forbidden, code::Blocked, code::NotFriends, code::RateLimited, code::EncryptionRequired, code::EpochConflict)>,
    ),
)]
pub async fn send(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> AppResult<(StatusCode, Json<SendMessageResponse>)> {
    let client_msg_id = req.client_msg_id.clone();
    let send = SendRequest {
        sender_id: who.user_id,
        conversation_id: id,
        client_msg_id: req.client_msg_id,
        kind: req.kind,
        body: req.body,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let committer = &state.committer;
    queue_send(
        state.store.as_ref(),
        committer,
        &state.config.limits,
        send,
        ReplyTo::Waiter(tx),
        None,
    )
    .await?;
    let outcome = rx
        .await
        .map_err(|_| AppError::new(ErrorCode::Unavailable, "commit was interrupted"))??;
    match outcome {
        WriteOutcome::Appended {
            seq, ts, duplicate, ..
        } => {
            let status = if duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(SendMessageResponse {
                    client_msg_id,
                    conversation_id: id,
                    seq,
                    ts,
                }),
            ))
        }
        WriteOutcome::Rejected(code) => Err(refusal(WriteKind::Send, code).into()),
        _ => Err(AppError::new(
            ErrorCode::Internal,
            "unexpected commit outcome",
        )),
    }
}

/// `POST /v1/conversations/{id}/read`: moves my read cursor.
#[utoipa::path(
    post,
    path = "/conversations/{id}/read",
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    request_body = ReadRequest,
    responses(
        (status = 204, description = "My read cursor moved (it never moves back)"),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn read(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<ReadRequest>,
) -> AppResult<StatusCode> {
    if req.seq < 0 {
        return Err(AppError::bad_request("seq must not be negative"));
    }
    let op = WriteOp::Read {
        user_id: who.user_id,
        conversation_id: id,
        seq: req.seq,
    };
    match state.committer.commit(op).await? {
        WriteOutcome::Rejected(code) => Err(refusal(WriteKind::Send, code).into()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
