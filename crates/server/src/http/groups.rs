//! Group management: members, roles, settings, and per-member mute.
//! Every change to the group goes through the committer, so it takes its
//! place in the conversation's seq order with a `system` message.

use crate::openapi::{code, Errors};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_proto::api::{
    AddMembersRequest, Conversation, MemberList, UpdateConversationRequest, UpdateMemberRequest,
};
use confab_proto::{ConversationId, ErrorCode, UserId};
use confab_store::{GroupChange, WriteOp, WriteOutcome};

use super::ApiJson;
use confab_proto::validate::check_group_title;

use crate::auth::AuthUser;
use crate::chat::membership::require_member;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::refusal::{refusal, WriteKind};
use crate::state::AppState;

/// Most users one add request may name.
const ADD_MAX: usize = 1_000;

/// Commits a group change; refusals come back as errors.
async fn change(state: &AppState, change: GroupChange) -> AppResult<()> {
    match state
        .committer
        .commit(WriteOp::Group { change, ts: 0 })
        .await?
    {
        WriteOutcome::GroupChanged(_) => Ok(()),
        WriteOutcome::Rejected(code) => Err(refusal(WriteKind::GroupChange, code).into()),
        _ => Err(AppError::new(
            ErrorCode::Internal,
            "unexpected commit outcome",
        )),
    }
}

/// `GET /v1/conversations/{id}/members`.
#[utoipa::path(
    get,
    path = "/conversations/{id}/members",
    tag = "members",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    responses(
        (status = 200, description = "Every member", body = MemberList),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
) -> AppResult<Json<MemberList>> {
    require_member(state.store.as_ref(), id, who.user_id).await?;
    let members = state.store.members(id).await?;
    Ok(Json(MemberList { members }))
}

/// `POST /v1/conversations/{id}/members` `{user_id}` or `{user_ids}`.
#[utoipa::path(
    post,
    path = "/conversations/{id}/members",
    tag = "members",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    request_body = AddMembersRequest,
    responses(
        (status = 200, description = "Every member after the addition", body = MemberList),
        Errors<(code::Forbidden, code::Blocked, code::GroupFull)>,
    ),
)]
pub async fn add(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<AddMembersRequest>,
) -> AppResult<Json<MemberList>> {
    let mut users = req.user_ids;
    users.extend(req.user_id);
    if users.is_empty() {
        return Err(AppError::bad_request("name user_id or user_ids"));
    }
    if users.len() > ADD_MAX {
        return Err(AppError::bad_request("at most 1000 users per request"));
    }
    crate::chat::blocks::check_group_additions(state.store.as_ref(), who.user_id, &users).await?;
    let add = GroupChange::Add {
        conversation_id: id,
        by: who.user_id,
        users,
        max_members: state.config.chat.max_group_members,
    };
    change(&state, add).await?;
    let members = state.store.members(id).await?;
    Ok(Json(MemberList { members }))
}

/// `DELETE /v1/conversations/{id}/members/{user_id}`: leave (my own id) or
/// remove someone.
#[utoipa::path(
    delete,
    path = "/conversations/{id}/members/{user_id}",
    tag = "members",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id"), ("user_id" = UserId, Path, description = "The member (my own id: leave)")),
    responses(
        (status = 204, description = "Removed (or left)"),
        Errors<(code::BadRequest, code::Forbidden)>,
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, user)): ApiPath<(ConversationId, UserId)>,
) -> AppResult<StatusCode> {
    let remove = GroupChange::Remove {
        conversation_id: id,
        by: who.user_id,
        user,
    };
    change(&state, remove).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/conversations/{id}/members/{user_id}` `{role}`.
#[utoipa::path(
    patch,
    path = "/conversations/{id}/members/{user_id}",
    tag = "members",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id"), ("user_id" = UserId, Path, description = "The member")),
    request_body = UpdateMemberRequest,
    responses(
        (status = 200, description = "Every member after the change", body = MemberList),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn set_role(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath((id, user)): ApiPath<(ConversationId, UserId)>,
    ApiJson(req): ApiJson<UpdateMemberRequest>,
) -> AppResult<Json<MemberList>> {
    let set = GroupChange::SetRole {
        conversation_id: id,
        by: who.user_id,
        user,
        role: req.role,
    };
    change(&state, set).await?;
    let members = state.store.members(id).await?;
    Ok(Json(MemberList { members }))
}

/// `PATCH /v1/conversations/{id}`: group title, avatar and add rule
/// (owner/admin), and my own `muted`.
#[utoipa::path(
    patch,
    path = "/conversations/{id}",
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path, description = "Conversation id")),
    request_body = UpdateConversationRequest,
    responses(
        (status = 200, description = "The conversation after the change", body = Conversation),
        Errors<(code::Forbidden,)>,
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<UpdateConversationRequest>,
) -> AppResult<Json<Conversation>> {
    require_member(state.store.as_ref(), id, who.user_id).await?;
    let title = match req.title {
        Some(t) => {
            let t = t.trim().to_owned();
            check_group_title(&t)?;
            Some(t)
        }
        None => None,
    };
    if let Some(Some(a)) = &req.avatar_media_id {
        if a.is_empty() || a.len() > 128 {
            return Err(AppError::bad_request(
                "avatar_media_id must be 1-128 characters",
            ));
        }
    }
    if title.is_some() || req.avatar_media_id.is_some() || req.members_can_add.is_some() {
        let update = GroupChange::Update {
            conversation_id: id,
            by: who.user_id,
            title,
            avatar_media_id: req.avatar_media_id,
            members_can_add: req.members_can_add,
        };
        change(&state, update).await?;
    }
    if let Some(muted) = req.muted {
        state.store.set_muted(id, who.user_id, muted).await?;
    }
    let view = state
        .store
        .conversation_for(id, who.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    Ok(Json(view))
}
