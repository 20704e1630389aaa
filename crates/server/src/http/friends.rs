//! Friends, friend requests and blocks.

use crate::openapi::{code, Errors};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use confab_proto::api::{
    BlockList, Friend, FriendList, FriendRequest, FriendRequestCreate, FriendRequestList,
    FriendRequestResult, FriendRequestState, PresenceStatus, User,
};
use confab_proto::Event;
use confab_proto::{ErrorCode, Millis, UserId};
use confab_store::{FriendAnswer, FriendRequestOutcome};
use serde::Deserialize;

use super::{ApiJson, ApiQuery};
use crate::auth::AuthUser;
use crate::clock::now_millis;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::ApiPath;
use crate::state::AppState;

/// Longest note on a friend request, in characters.
const REQUEST_MESSAGE_MAX_CHARS: usize = 500;

/// `POST /v1/friends/requests`.
#[utoipa::path(
    post,
    path = "/friends/requests",
    tag = "friends",
    security(("bearer" = [])),
    request_body = FriendRequestCreate,
    responses(
        (status = 201, description = "Asked: the request is pending", body = FriendRequestResult),
        (status = 200, description = "They had asked me already: now friends", body = FriendRequestResult),
        Errors<(code::NotFound, code::Blocked, code::RateLimited)>,
    ),
)]
pub async fn request(
    State(state): State<AppState>,
    who: AuthUser,
    ApiJson(req): ApiJson<FriendRequestCreate>,
) -> AppResult<(StatusCode, Json<FriendRequestResult>)> {
    if req.user_id == who.user_id {
        return Err(AppError::bad_request("you cannot befriend yourself"));
    }
    let message = req
        .message
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty());
    if message
        .as_ref()
        .is_some_and(|m| m.chars().count() > REQUEST_MESSAGE_MAX_CHARS)
    {
        return Err(AppError::bad_request(
            "the message may be at most 500 characters",
        ));
    }
    let max = state.config.chat.max_pending_friend_requests;
    let outcome = state
        .store
        .send_friend_request(who.user_id, req.user_id, message, max, now_millis())
        .await?;
    match outcome {
        FriendRequestOutcome::Pending(request) => {
            events::publish(
                state.bus.as_ref(),
                Arc::from(vec![request.to_user.id, who.user_id]),
                Event::FriendRequest {
                    request: request.clone(),
                },
            )
            .await;
            Ok((
                StatusCode::CREATED,
                Json(FriendRequestResult {
                    status: FriendRequestState::Pending,
                    request: Some(request),
                    friend: None,
                }),
            ))
        }
        FriendRequestOutcome::Accepted { request, since } => {
            let friend = became_friends(&state, &request, since).await;
            Ok((
                StatusCode::OK,
                Json(FriendRequestResult {
                    status: FriendRequestState::Accepted,
                    request: None,
                    friend: Some(friend),
                }),
            ))
        }
        FriendRequestOutcome::AlreadyFriends => Err(AppError::new(
            ErrorCode::BadRequest,
            "you are already friends",
        )),
        FriendRequestOutcome::Blocked => Err(AppError::new(
            ErrorCode::Blocked,
            "this user cannot be asked: one of you blocked the other",
        )),
        FriendRequestOutcome::TooMany => Err(AppError::new(
            ErrorCode::RateLimited,
            format!("you have {max} unanswered friend requests; wait for answers"),
        )),
        FriendRequestOutcome::UnknownUser => Err(AppError::not_found("user")),
    }
}

/// Tells both sides (every device) about a new friendship and each other's
/// presence. Returns the asker as the answerer (the caller) sees them.
async fn became_friends(state: &AppState, request: &FriendRequest, since: Millis) -> Friend {
    let (asker, answerer) = (&request.from_user, &request.to_user);
    let seen = state.presence.seen(&[asker.id, answerer.id]).await;
    let friend_view = |u: &User| {
        let s = seen.get(&u.id);
        Friend {
            user: u.clone(),
            since,
            status: s.map_or(PresenceStatus::Offline, |s| s.status),
            last_seen: s.and_then(|s| s.last_seen),
        }
    };
    let for_asker = friend_view(answerer);
    let for_answerer = friend_view(asker);
    let bus = state.bus.as_ref();
    let event = |f: &Friend| Event::FriendAccepted {
        friend: f.clone(),
        request_id: request.id,
    };
    events::publish(bus, Arc::from(vec![asker.id]), event(&for_asker)).await;
    events::publish(bus, Arc::from(vec![answerer.id]), event(&for_answerer)).await;
    for (to, f) in [(asker.id, &for_asker), (answerer.id, &for_answerer)] {
        state
            .presence
            .send(Arc::from(vec![to]), f.user.id, f.status, f.last_seen)
            .await;
    }
    for_answerer
}

/// Query of `GET /v1/friends/requests`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `incoming` (default: requests to me) or `outgoing` (mine).
    #[param(pattern = "^(incoming|outgoing)$")]
    #[serde(default)]
    direction: Option<String>,
}

/// `GET /v1/friends/requests?direction=incoming|outgoing` (default incoming).
#[utoipa::path(
    get,
    path = "/friends/requests",
    tag = "friends",
    security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, description = "Pending requests, oldest first", body = FriendRequestList)),
)]
pub async fn list_requests(
    State(state): State<AppState>,
    who: AuthUser,
    ApiQuery(p): ApiQuery<ListParams>,
) -> AppResult<Json<FriendRequestList>> {
    let incoming = match p.direction.as_deref() {
        None | Some("incoming") => true,
        Some("outgoing") => false,
        Some(_) => {
            return Err(AppError::bad_request(
                "direction must be incoming or outgoing",
            ))
        }
    };
    let requests = state.store.friend_requests(who.user_id, incoming).await?;
    Ok(Json(FriendRequestList { requests }))
}

/// `POST /v1/friends/requests/{id}/accept`.
#[utoipa::path(
    post,
    path = "/friends/requests/{id}/accept",
    tag = "friends",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Friend request id")),
    responses((status = 200, description = "Now friends", body = FriendRequestResult)),
)]
pub async fn accept(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<FriendRequestResult>> {
    match state
        .store
        .answer_friend_request(id, who.user_id, true, now_millis())
        .await?
    {
        FriendAnswer::Accepted { request, since } => {
            let friend = became_friends(&state, &request, since).await;
            Ok(Json(FriendRequestResult {
                status: FriendRequestState::Accepted,
                request: None,
                friend: Some(friend),
            }))
        }
        _ => Err(AppError::not_found("friend request")),
    }
}

/// `POST /v1/friends/requests/{id}/decline`. The asker is not told; the
/// request just leaves their outgoing list.
#[utoipa::path(
    post,
    path = "/friends/requests/{id}/decline",
    tag = "friends",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Friend request id")),
    responses((status = 204, description = "Declined; the asker is not told")),
)]
pub async fn decline(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<StatusCode> {
    match state
        .store
        .answer_friend_request(id, who.user_id, false, now_millis())
        .await?
    {
        FriendAnswer::Declined(_) => Ok(StatusCode::NO_CONTENT),
        _ => Err(AppError::not_found("friend request")),
    }
}

/// `DELETE /v1/friends/requests/{id}`: withdraw my own request.
#[utoipa::path(
    delete,
    path = "/friends/requests/{id}",
    tag = "friends",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Friend request id")),
    responses((status = 204, description = "My request is withdrawn")),
)]
pub async fn cancel(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<StatusCode> {
    if state.store.cancel_friend_request(id, who.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("friend request"))
    }
}

/// `GET /v1/friends`: friends with presence.
#[utoipa::path(
    get,
    path = "/friends",
    tag = "friends",
    security(("bearer" = [])),
    responses((status = 200, description = "My friends with presence", body = FriendList)),
)]
pub async fn list(State(state): State<AppState>, who: AuthUser) -> AppResult<Json<FriendList>> {
    let friends = state.store.friends(who.user_id).await?;
    let ids: Vec<UserId> = friends.iter().map(|(u, _)| u.id).collect();
    let seen = state.presence.seen(&ids).await;
    let friends = friends
        .into_iter()
        .map(|(user, since)| {
            let s = seen.get(&user.id);
            Friend {
                status: s.map_or(PresenceStatus::Offline, |s| s.status),
                last_seen: s.and_then(|s| s.last_seen),
                user,
                since,
            }
        })
        .collect();
    Ok(Json(FriendList { friends }))
}

/// `DELETE /v1/friends/{user_id}`: unfriend. Both get `friend_removed`.
#[utoipa::path(
    delete,
    path = "/friends/{user_id}",
    tag = "friends",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path, description = "The other user")),
    responses((status = 204, description = "No longer friends; both get `friend_removed`")),
)]
pub async fn unfriend(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(other): ApiPath<UserId>,
) -> AppResult<StatusCode> {
    if !state.store.unfriend(who.user_id, other).await? {
        return Err(AppError::not_found("friend"));
    }
    announce_unfriended(&state, who.user_id, other).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn announce_unfriended(state: &AppState, a: UserId, b: UserId) {
    let bus = state.bus.as_ref();
    events::publish(bus, Arc::from(vec![a]), Event::FriendRemoved { user_id: b }).await;
    events::publish(bus, Arc::from(vec![b]), Event::FriendRemoved { user_id: a }).await;
}

/// `GET /v1/blocks`.
#[utoipa::path(
    get,
    path = "/blocks",
    tag = "blocks",
    security(("bearer" = [])),
    responses((status = 200, description = "Users I blocked, newest first", body = BlockList)),
)]
pub async fn blocks(State(state): State<AppState>, who: AuthUser) -> AppResult<Json<BlockList>> {
    let users = state.store.blocked_users(who.user_id).await?;
    Ok(Json(BlockList { users }))
}

/// `PUT /v1/blocks/{user_id}`: block; ends a friendship and pending
/// requests. The blocked user is not told, except that the friendship ends.
#[utoipa::path(
    put,
    path = "/blocks/{user_id}",
    tag = "blocks",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path, description = "The other user")),
    responses(
        (status = 204, description = "Blocked (also when already blocked)"),
        Errors<(code::BadRequest,)>,
    ),
)]
pub async fn block(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(other): ApiPath<UserId>,
) -> AppResult<StatusCode> {
    if other == who.user_id {
        return Err(AppError::bad_request("you cannot block yourself"));
    }
    state
        .store
        .user(other)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    if state.store.block(who.user_id, other, now_millis()).await? {
        announce_unfriended(&state, who.user_id, other).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/blocks/{user_id}`: unblock (restores nothing else).
#[utoipa::path(
    delete,
    path = "/blocks/{user_id}",
    tag = "blocks",
    security(("bearer" = [])),
    params(("user_id" = UserId, Path, description = "The other user")),
    responses((status = 204, description = "Unblocked")),
)]
pub async fn unblock(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(other): ApiPath<UserId>,
) -> AppResult<StatusCode> {
    if state.store.unblock(who.user_id, other).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("block"))
    }
}
