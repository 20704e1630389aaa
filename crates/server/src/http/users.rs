//! Profiles and user lookup.

use axum::extract::State;
use axum::Json;
use confab_proto::api::{UpdateProfileRequest, User, UserList};
use confab_proto::validate::{check_display_name, check_status_text};
use confab_proto::UserId;
use confab_store::ProfileUpdate;
use serde::Deserialize;

use super::{ApiJson, ApiQuery};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::extract::ApiPath;
use crate::openapi::{code, Errors};
use crate::state::AppState;

/// `GET /v1/users/me`.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "My profile, with my own settings", body = User),
        Errors<(code::NotFound,)>,
    ),
)]
pub async fn me(State(state): State<AppState>, who: AuthUser) -> AppResult<Json<User>> {
    let user = state
        .store
        .user(who.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    Ok(Json(with_settings(&state, user).await?))
}

/// Adds the owner-only settings to the caller's own profile.
async fn with_settings(state: &AppState, mut user: User) -> AppResult<User> {
    let records = state.store.presence_records(&[user.id]).await?;
    user.hide_presence = Some(records.get(&user.id).is_some_and(|r| r.hidden));
    Ok(user)
}

/// `PATCH /v1/users/me`.
#[utoipa::path(
    patch,
    path = "/users/me",
    tag = "users",
    security(("bearer" = [])),
    request_body = UpdateProfileRequest,
    responses(
        (status = 200, description = "My profile after the change", body = User),
        Errors<(code::NotFound,)>,
    ),
)]
pub async fn update_me(
    State(state): State<AppState>,
    who: AuthUser,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> AppResult<Json<User>> {
    if let Some(d) = &req.display_name {
        check_display_name(d)?;
    }
    if let Some(Some(s)) = &req.status_text {
        check_status_text(s)?;
    }
    if let Some(Some(a)) = &req.avatar_media_id {
        if a.is_empty() || a.len() > 128 {
            return Err(AppError::bad_request(
                "avatar_media_id must be 1-128 characters",
            ));
        }
    }
    let update = ProfileUpdate {
        display_name: req.display_name,
        avatar_media_id: req.avatar_media_id,
        status_text: req.status_text,
        hide_presence: req.hide_presence,
    };
    let before = state.store.presence_records(&[who.user_id]).await?;
    let was_hidden = before.get(&who.user_id).is_some_and(|r| r.hidden);
    let user = state
        .store
        .update_profile(who.user_id, update)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    if let Some(hidden) = req.hide_presence {
        if hidden != was_hidden {
            state.presence.visibility_changed(who.user_id, hidden).await;
        }
    }
    Ok(Json(with_settings(&state, user).await?))
}

/// Query of `GET /v1/users`: `q` (prefix search) or `ids` (lookup).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// A username prefix (1-32 characters); give this or `ids`.
    #[serde(default)]
    q: Option<String>,
    /// Comma-separated user ids (1-100); give this or `q`.
    #[serde(default)]
    ids: Option<String>,
    /// Most users for `q` (1-50, default 20).
    #[serde(default)]
    limit: Option<u32>,
}

/// Most ids one `GET /v1/users?ids=` may name.
pub const MAX_USER_IDS: usize = 100;

/// `GET /v1/users?q=`: username prefix search; `GET /v1/users?ids=1,2`:
/// profiles by id, in one round trip (member lists).
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, description = "Matching users", body = UserList)),
)]
pub async fn search(
    State(state): State<AppState>,
    _who: AuthUser,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> AppResult<Json<UserList>> {
    let (q, ids) = match (params.q, params.ids) {
        (Some(q), None) => (q, None),
        (None, Some(ids)) => (String::new(), Some(ids)),
        _ => {
            return Err(AppError::bad_request(
                "give either q (a username prefix) or ids (comma-separated user ids)",
            ))
        }
    };
    if let Some(ids) = ids {
        let ids = parse_ids(&ids).ok_or_else(|| {
            AppError::bad_request(format!(
                "ids must be 1-{MAX_USER_IDS} comma-separated user ids"
            ))
        })?;
        let users = state.store.users(&ids).await?;
        return Ok(Json(UserList { users }));
    }
    let q = q.trim().to_ascii_lowercase();
    if q.is_empty() || q.len() > 32 {
        return Err(AppError::bad_request(
            "q must be 1-32 characters of a username",
        ));
    }
    let limit = params.limit.unwrap_or(20).clamp(1, 50);
    let users = state.store.search_users(&q, limit).await?;
    Ok(Json(UserList { users }))
}

/// `"1,2,3"` as ids, without repeats; `None` when malformed, empty or too
/// many.
fn parse_ids(list: &str) -> Option<Vec<UserId>> {
    let mut ids = list
        .split(',')
        .map(|s| s.trim().parse::<UserId>().ok())
        .collect::<Option<Vec<_>>>()?;
    ids.sort_unstable();
    ids.dedup();
    (!ids.is_empty() && ids.len() <= MAX_USER_IDS).then_some(ids)
}

/// `GET /v1/users/{id}`.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = UserId, Path, description = "User id")),
    responses((status = 200, description = "The user's profile", body = User)),
)]
pub async fn by_id(
    State(state): State<AppState>,
    _who: AuthUser,
    ApiPath(id): ApiPath<UserId>,
) -> AppResult<Json<User>> {
    let user = state
        .store
        .user(id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    Ok(Json(user))
}
