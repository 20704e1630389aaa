//! Register, login, refresh, logout, password change.

use crate::openapi::{code, Errors};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use confab_proto::api::{
    ChangePasswordRequest, LoginRequest, RefreshRequest, RegisterRequest, RegisterResponse,
    TokenResponse, User,
};
use confab_proto::validate::{check_display_name, check_password, Username};
use confab_proto::{DeviceId, ErrorCode, UserId};
use confab_store::{NewUser, RefreshOutcome, StoreError};

use super::ApiJson;
use crate::auth::{token_hash, AuthUser};
use crate::clock::now_millis;
use crate::error::{AppError, AppResult};
use crate::extract::ClientAddr;
use crate::state::AppState;
use crate::throttle::{Refused, Scope};

/// A 429 `rate_limited` with `Retry-After`.
pub(super) fn throttled(refused: Refused) -> Response {
    crate::metrics::throttled(refused.scope.as_str());
    let secs = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let what = match refused.scope {
        Scope::Registration => "too many new accounts from your address",
        _ => "too many failed logins",
    };
    let mut r = AppError::new(
        ErrorCode::RateLimited,
        format!("{what}: try again in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// `POST /v1/auth/register`: at most `auth.registrations_per_hour` per
/// client address.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new account", body = RegisterResponse),
        Errors<(code::BadRequest, code::InvalidUsername, code::WeakPassword, code::UsernameTaken, code::RateLimited)>,
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), Response> {
    let username = Username::parse(&req.username).map_err(|e| AppError::from(e).into_response())?;
    state
        .throttle
        .register(client.0, Instant::now())
        .map_err(throttled)?;
    register_checked(&state, username, req)
        .await
        .map_err(IntoResponse::into_response)
}

async fn register_checked(
    state: &AppState,
    username: Username,
    req: RegisterRequest,
) -> AppResult<(StatusCode, Json<RegisterResponse>)> {
    check_password(&req.password)?;
    let display_name = match req.display_name {
        Some(d) => {
            check_display_name(&d)?;
            d
        }
        None => username.as_str().to_owned(),
    };
    let password_hash = state.auth.hash_password(req.password).await?;
    let user = state
        .store
        .create_user(NewUser {
            username: username.as_str().to_owned(),
            username_key: username.canonical(),
            display_name,
            password_hash,
            now: now_millis(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict => AppError::new(
                ErrorCode::UsernameTaken,
                "that username is taken, pick another",
            ),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(RegisterResponse { user })))
}

/// `POST /v1/auth/login`: checks the password and makes a new device.
/// Failed logins slow down further tries for the account and for the
/// client's address (429 with `Retry-After`); an unknown user and a wrong
/// password answer alike, after the same work.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens for a new device", body = TokenResponse),
        Errors<(code::InvalidCredentials, code::RateLimited)>,
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, Response> {
    // Counted by canonical username, known or not; all malformed names
    // share one key (they can never log in, and must not grow the table).
    let account = Username::parse(&req.username)
        .map(|u| u.canonical())
        .unwrap_or_else(|_| "(malformed)".to_owned());
    state
        .throttle
        .check_login(&account, client.0, Instant::now())
        .map_err(throttled)?;
    match login_checked(&state, req).await {
        Ok(tokens) => {
            state.throttle.login_succeeded(&account);
            Ok(tokens)
        }
        Err(e) => {
            if e.0.code == ErrorCode::InvalidCredentials {
                crate::metrics::login_failed();
                state
                    .throttle
                    .login_failed(&account, client.0, Instant::now());
            }
            Err(e.into_response())
        }
    }
}

async fn login_checked(state: &AppState, req: LoginRequest) -> AppResult<Json<TokenResponse>> {
    let invalid = || AppError::new(ErrorCode::InvalidCredentials, "wrong username or password");
    let creds = match Username::parse(&req.username) {
        Ok(name) => {
            state
                .store
                .credentials_by_username(&name.canonical())
                .await?
        }
        Err(_) => None,
    };
    let (user, hash) = match creds {
        Some(c) => (Some(c.user), Some(c.password_hash)),
        None => (None, None),
    };
    if !state.auth.verify_password(req.password, hash).await {
        return Err(invalid());
    }
    let user = user.ok_or_else(invalid)?;
    Ok(Json(
        open_device(state, user, req.device_name, req.device_public_key).await?,
    ))
}

/// A new device for a signed-in user (name cut to 64 characters, a public
/// key over 256 bytes dropped) and its first tokens: what every sign-in,
/// by password or by a provider, ends with.
pub(super) async fn open_device(
    state: &AppState,
    user: User,
    device_name: Option<String>,
    public_key: Option<String>,
) -> AppResult<TokenResponse> {
    let device_name = device_name.map(|n| n.chars().take(64).collect::<String>());
    let public_key = public_key.filter(|k| k.len() <= 256);
    let device = state
        .store
        .create_device(user.id, device_name, public_key, now_millis())
        .await?;
    state.auth.issue(state.store.as_ref(), user, device).await
}

/// `POST /v1/auth/refresh`: spends the refresh token for a new pair. A token
/// presented twice means it leaked: the device is logged out.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenResponse),
        Errors<(code::InvalidRefreshToken,)>,
    ),
)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> AppResult<Json<TokenResponse>> {
    let outcome = state
        .store
        .spend_refresh_token(&token_hash(&req.refresh_token), now_millis())
        .await?;
    match outcome {
        RefreshOutcome::Fresh(owner) => {
            let user =
                state.store.user(owner.user_id).await?.ok_or_else(|| {
                    AppError::new(ErrorCode::InvalidRefreshToken, "account is gone")
                })?;
            Ok(Json(
                state
                    .auth
                    .issue(state.store.as_ref(), user, owner.device_id)
                    .await?,
            ))
        }
        RefreshOutcome::Reused(owner) => {
            tracing::warn!(
                user = owner.user_id,
                device = owner.device_id,
                "refresh token reused; device revoked"
            );
            disconnect(&state, owner.user_id, owner.device_id, false).await;
            Err(AppError::new(
                ErrorCode::InvalidRefreshToken,
                "refresh token was already used; this device is logged out, log in again",
            ))
        }
        RefreshOutcome::Invalid => Err(AppError::new(
            ErrorCode::InvalidRefreshToken,
            "unknown or expired refresh token, log in again",
        )),
    }
}

/// `POST /v1/auth/password`: checks the current password, sets the new one
/// and logs out every other device of the user.
#[utoipa::path(
    post,
    path = "/auth/password",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; every other device is logged out"),
        Errors<(code::WeakPassword, code::InvalidCredentials, code::NotFound)>,
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    who: AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> AppResult<StatusCode> {
    check_password(&req.new_password)?;
    let user = state
        .store
        .user(who.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    let key = Username::parse(&user.username)?.canonical();
    let hash = state
        .store
        .credentials_by_username(&key)
        .await?
        .map(|c| c.password_hash);
    if !state.auth.verify_password(req.current_password, hash).await {
        return Err(AppError::new(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        ));
    }
    let new_hash = state.auth.hash_password(req.new_password).await?;
    state
        .store
        .change_password(who.user_id, &new_hash, who.device_id, now_millis())
        .await?;
    disconnect(&state, who.user_id, who.device_id, true).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/logout`: revokes this device's tokens.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses((status = 204, description = "This device's tokens are revoked")),
)]
pub async fn logout(State(state): State<AppState>, who: AuthUser) -> AppResult<StatusCode> {
    state
        .store
        .revoke_device(who.device_id, now_millis())
        .await?;
    disconnect(&state, who.user_id, who.device_id, false).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Closes the user's connections of `device` (or of every other device when
/// `others`) on this node at once and on every other node through the bus.
async fn disconnect(state: &AppState, user: UserId, device: DeviceId, others: bool) {
    state
        .hub
        .disconnect_devices(user, |d| (d == device) != others);
    let control = confab_bus::Delivery::disconnect(user, &[device], others);
    if let Err(e) = state.bus.publish(control).await {
        tracing::warn!(error = %e, user, "could not tell other nodes to disconnect revoked devices");
    }
}
