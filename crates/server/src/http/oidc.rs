//! Sign-in with an OpenID Connect provider (`/v1/auth/oidc/...`).
//!
//! 1. `POST {provider}/start` (or `/link`, signed in) keeps the flow's
//!    `state`, PKCE verifier and nonce server-side and answers the
//!    provider's authorization URL and a `flow` secret only the client knows.
//! 2. The provider redirects the browser to `GET callback?state&code`: the
//!    state is taken (single use), the code redeemed with the verifier, the
//!    ID token verified. The browser gets a short-lived single-use code, in
//!    the URL fragment of the app (`/#oidc_code=`) or on a page to paste
//!    into the CLI. No access token is ever put in a URL.
//! 3. `POST exchange {code, flow}`: a returning user gets tokens, a new
//!    one a signup token (`POST signup {signup_token, username}`), a link
//!    is made.

use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use confab_proto::api::{
    OidcClient, OidcExchangeRequest, OidcExchangeResponse, OidcIdentities, OidcLinked,
    OidcLinkedIdentity, OidcProviders, OidcSignupOffer, OidcSignupRequest, OidcStartRequest,
    OidcStartResponse, TokenResponse,
};
use confab_proto::validate::{check_display_name, Username};
use confab_proto::{ErrorCode, UserId};
use confab_store::{NewUser, OidcIdentity, OidcLink, OidcSignup};
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiPath};
use crate::auth::{new_token, token_hash, AuthUser};
use crate::clock::now_millis;
use crate::error::{AppError, AppResult};
use crate::extract::ClientAddr;
use crate::openapi::{code, Errors};
use crate::state::AppState;

/// What the store keeps under the hash of a single-use secret.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Pending {
    /// Under the `state`: until the provider redirects back.
    Flow {
        provider: String,
        pkce_verifier: String,
        nonce: String,
        /// SHA-256 (hex) of the client's `flow` secret.
        binding: String,
        client: OidcClient,
        link_user: Option<UserId>,
    },
    /// Under the one-time code: until the client exchanges it.
    Code {
        provider: String,
        binding: String,
        link_user: Option<UserId>,
        issuer: String,
        subject: String,
        preferred_username: Option<String>,
        name: Option<String>,
        email: Option<String>,
    },
    /// Under the signup token: until a username is picked.
    Signup {
        issuer: String,
        subject: String,
        display_name: String,
        expires_at: i64,
    },
}

fn code_invalid() -> AppError {
    AppError::new(
        ErrorCode::OidcCodeInvalid,
        "this sign-in code is unknown, expired or already used: sign in again",
    )
}

fn oidc(state: &AppState) -> AppResult<&crate::oidc::Oidc> {
    state
        .oidc
        .as_deref()
        .ok_or_else(|| AppError::not_found("sign-in provider"))
}

async fn put(state: &AppState, secret: &str, pending: &Pending, ttl_s: u64) -> AppResult<i64> {
    let now = now_millis();
    let expires_at =
        now.saturating_add(i64::try_from(ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX));
    let payload = serde_json::to_string(pending)
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("encoding: {e}")))?;
    let max = oidc(state)?.config().max_pending;
    let kept = state
        .store
        .put_oidc_pending(&token_hash(secret), &payload, expires_at, now, max)
        .await?;
    if !kept {
        tracing::warn!(max, "oidc: too many sign-ins in progress");
        return Err(AppError::new(
            ErrorCode::Unavailable,
            "too many sign-ins in progress, try again in a few minutes",
        ));
    }
    Ok(expires_at)
}

async fn take(state: &AppState, secret: &str) -> AppResult<Option<Pending>> {
    if secret.is_empty() || secret.len() > 256 {
        return Ok(None);
    }
    let payload = state
        .store
        .take_oidc_pending(&token_hash(secret), now_millis())
        .await?;
    Ok(payload.and_then(|p| serde_json::from_str(&p).ok()))
}

/// `GET /v1/auth/oidc/providers`: the sign-in buttons (empty when OIDC is off).
#[utoipa::path(
    get,
    path = "/auth/oidc/providers",
    tag = "accounts",
    responses((status = 200, description = "The providers to offer as sign-in buttons", body = OidcProviders)),
)]
pub async fn providers(State(state): State<AppState>) -> Json<OidcProviders> {
    Json(OidcProviders {
        providers: state
            .oidc
            .as_deref()
            .map(|o| o.providers())
            .unwrap_or_default(),
    })
}

/// `POST /v1/auth/oidc/{provider}/start`: begins a sign-in.
#[utoipa::path(
    post,
    path = "/auth/oidc/{provider}/start",
    tag = "accounts",
    params(("provider" = String, Path, description = "A configured provider's id")),
    request_body = OidcStartRequest,
    responses(
        (status = 200, description = "Where to send the browser, and the flow secret", body = OidcStartResponse),
        Errors<(code::BadRequest, code::NotFound, code::Unavailable)>,
    ),
)]
pub async fn start(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(req): ApiJson<OidcStartRequest>,
) -> AppResult<Json<OidcStartResponse>> {
    begin(&state, &provider, req.client, None).await
}

/// `POST /v1/auth/oidc/{provider}/link`: begins linking a provider account
/// to the caller's account.
#[utoipa::path(
    post,
    path = "/auth/oidc/{provider}/link",
    tag = "accounts",
    security(("bearer" = [])),
    params(("provider" = String, Path, description = "A configured provider's id")),
    request_body = OidcStartRequest,
    responses(
        (status = 200, description = "Where to send the browser, and the flow secret", body = OidcStartResponse),
        Errors<(code::BadRequest, code::NotFound, code::Unavailable)>,
    ),
)]
pub async fn link(
    State(state): State<AppState>,
    who: AuthUser,
    ApiPath(provider): ApiPath<String>,
    ApiJson(req): ApiJson<OidcStartRequest>,
) -> AppResult<Json<OidcStartResponse>> {
    begin(&state, &provider, req.client, Some(who.user_id)).await
}

async fn begin(
    state: &AppState,
    provider: &str,
    client: OidcClient,
    link_user: Option<UserId>,
) -> AppResult<Json<OidcStartResponse>> {
    let oidc = oidc(state)?;
    let p = oidc.provider(provider)?;
    let auth = oidc.authorize(p).await?;
    let (flow, flow_hash) = new_token();
    let ttl = oidc.config().flow_ttl_s;
    put(
        state,
        &auth.state,
        &Pending::Flow {
            provider: p.id.clone(),
            pkce_verifier: auth.pkce_verifier,
            nonce: auth.nonce,
            binding: crate::hex::encode(&flow_hash),
            client,
            link_user,
        },
        ttl,
    )
    .await?;
    Ok(Json(OidcStartResponse {
        authorization_url: auth.url,
        flow,
        expires_in: ttl,
    }))
}

/// The provider's redirect.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The flow's `state`, as given to the provider.
    state: Option<String>,
    /// The authorization code to redeem.
    code: Option<String>,
    /// The provider's refusal (RFC 6749 §4.1.2.1).
    error: Option<String>,
    /// The provider's words for the refusal.
    error_description: Option<String>,
    /// RFC 9207: the issuer that answers, against mix-up attacks.
    iss: Option<String>,
}

/// `GET /v1/auth/oidc/callback`: where providers send the browser back.
/// An unknown, expired or used `state`: 400 `oidc_state_invalid`. A
/// refusal or a failed check: the app's page with `#oidc_error=`, or
/// 401 `oidc_failed` for the CLI. Success: the app's page with
/// `#oidc_code=`, or a page that shows the code for the CLI.
#[utoipa::path(
    get,
    path = "/auth/oidc/callback",
    tag = "accounts",
    params(CallbackQuery),
    responses(
        (status = 200, description = "A page showing the one-time code (CLI sign-ins)", content_type = "text/html"),
        (status = 303, description = "Back to the app with `#oidc_code=` or `#oidc_error=` (browser sign-ins)"),
        Errors<(code::OidcStateInvalid, code::OidcFailed, code::Unavailable)>,
    ),
)]
pub async fn callback(State(state): State<AppState>, Query(q): Query<CallbackQuery>) -> Response {
    let flow = match take(&state, q.state.as_deref().unwrap_or("")).await {
        Ok(Some(Pending::Flow {
            provider,
            pkce_verifier,
            nonce,
            binding,
            client,
            link_user,
        })) => (provider, pkce_verifier, nonce, binding, client, link_user),
        Ok(_) => {
            return AppError::new(
                ErrorCode::OidcStateInvalid,
                "this sign-in is unknown, expired or already finished: start again",
            )
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    let (provider, pkce_verifier, nonce, binding, client, link_user) = flow;
    let result = finish(
        &state,
        &provider,
        q,
        pkce_verifier,
        nonce,
        binding,
        link_user,
    )
    .await;
    match (result, client) {
        (Ok(code), OidcClient::Web) => redirect_to_app(&format!("oidc_code={code}")),
        (Ok(code), OidcClient::Cli) => code_page(&code),
        (Err(e), OidcClient::Web) => redirect_to_app(&format!("oidc_error={}", e.0.code)),
        (Err(e), OidcClient::Cli) => e.into_response(),
    }
}

async fn finish(
    state: &AppState,
    provider: &str,
    q: CallbackQuery,
    pkce_verifier: String,
    nonce: String,
    binding: String,
    link_user: Option<UserId>,
) -> AppResult<String> {
    let oidc = oidc(state)?;
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        tracing::info!(provider, %error, %detail, "oidc: the provider refused the sign-in");
        return Err(AppError::new(
            ErrorCode::OidcFailed,
            format!(
                "the provider refused the sign-in ({})",
                error.chars().take(64).collect::<String>()
            ),
        ));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| AppError::new(ErrorCode::OidcFailed, "the provider sent no code"))?;
    let p = oidc.provider(provider).map_err(|_| {
        AppError::new(
            ErrorCode::OidcFailed,
            "that provider is no longer configured",
        )
    })?;
    if let Some(iss) = &q.iss {
        if iss.trim_end_matches('/') != p.issuer.trim_end_matches('/') {
            return Err(AppError::new(
                ErrorCode::OidcFailed,
                "the answer came from another issuer than the sign-in went to",
            ));
        }
    }
    let signed_in = oidc.finish(p, code, pkce_verifier, nonce).await?;
    let (one_time, _) = new_token();
    put(
        state,
        &one_time,
        &Pending::Code {
            provider: provider.to_owned(),
            binding,
            link_user,
            issuer: signed_in.identity.issuer,
            subject: signed_in.identity.subject,
            preferred_username: signed_in.preferred_username,
            name: signed_in.name,
            email: signed_in.email,
        },
        oidc.config().code_ttl_s,
    )
    .await?;
    Ok(one_time)
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// To the app at the server's root; the fragment never reaches a server
/// or a `Referer`. The target is fixed: nothing from the request chooses it.
fn redirect_to_app(fragment: &str) -> Response {
    let location = format!("/#{fragment}");
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r)
}

/// The page the CLI's user copies the code from.
fn code_page(code: &str) -> Response {
    // The code is base64url: nothing in it needs escaping.
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Confab sign-in</title></head><body>\
         <h1>Signed in</h1><p>Paste this one-time code into confab \
         (it works once, for a few minutes):</p>\
         <pre id=\"oidc-code\">{code}</pre></body></html>"
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    no_store(r)
}

/// `POST /v1/auth/oidc/exchange`: the one-time code for tokens, a signup
/// token or a finished link. Single use; it needs the `flow` secret of the
/// client that started the sign-in.
#[utoipa::path(
    post,
    path = "/auth/oidc/exchange",
    tag = "accounts",
    request_body = OidcExchangeRequest,
    responses(
        (status = 200, description = "Tokens, a signup offer, or a finished link", body = OidcExchangeResponse),
        Errors<(code::BadRequest, code::NotFound, code::OidcCodeInvalid, code::OidcIdentityTaken)>,
    ),
)]
pub async fn exchange(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OidcExchangeRequest>,
) -> AppResult<Json<OidcExchangeResponse>> {
    let oidc = oidc(&state)?;
    let Some(Pending::Code {
        provider,
        binding,
        link_user,
        issuer,
        subject,
        preferred_username,
        name,
        email,
    }) = take(&state, &req.code).await?
    else {
        return Err(code_invalid());
    };
    if crate::hex::encode(&token_hash(&req.flow)) != binding {
        return Err(code_invalid());
    }
    let identity = OidcIdentity { issuer, subject };
    let now = now_millis();
    if let Some(user_id) = link_user {
        return match state
            .store
            .link_oidc_identity(user_id, identity, now)
            .await?
        {
            OidcLink::Linked | OidcLink::AlreadyLinked => {
                let user = state
                    .store
                    .user(user_id)
                    .await?
                    .ok_or_else(|| AppError::not_found("user"))?;
                Ok(Json(OidcExchangeResponse::Linked(OidcLinked {
                    provider,
                    user,
                })))
            }
            OidcLink::TakenBy(_) => Err(identity_taken()),
        };
    }
    if let Some(user_id) = state.store.oidc_identity_user(&identity).await? {
        let user = state
            .store
            .user(user_id)
            .await?
            .ok_or_else(|| AppError::not_found("user"))?;
        let tokens =
            super::accounts::open_device(&state, user, req.device_name, req.device_public_key)
                .await?;
        return Ok(Json(OidcExchangeResponse::SignedIn(tokens)));
    }
    let display_name = [name.as_deref(), preferred_username.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|n| check_display_name(n).is_ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let suggested_username =
        suggest_username(&state, &[preferred_username, email_local(email)]).await;
    let (signup_token, _) = new_token();
    let ttl = oidc.config().flow_ttl_s;
    let pending = |expires_at| Pending::Signup {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
        display_name: display_name.clone(),
        expires_at,
    };
    let expires_at =
        now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));
    put(&state, &signup_token, &pending(expires_at), ttl).await?;
    Ok(Json(OidcExchangeResponse::SignupRequired(
        OidcSignupOffer {
            signup_token,
            suggested_username,
            display_name,
            expires_in: ttl,
        },
    )))
}

fn identity_taken() -> AppError {
    AppError::new(
        ErrorCode::OidcIdentityTaken,
        "that provider account already belongs to another user",
    )
}

fn email_local(email: Option<String>) -> Option<String> {
    email.and_then(|e| e.split('@').next().map(str::to_owned))
}

/// The first candidate that is a valid username and free.
async fn suggest_username(state: &AppState, candidates: &[Option<String>]) -> Option<String> {
    for c in candidates.iter().flatten() {
        let Ok(name) = Username::parse(c) else {
            continue;
        };
        if let Ok(None) = state.store.credentials_by_username(&name.canonical()).await {
            return Some(name.as_str().to_owned());
        }
    }
    None
}

/// `POST /v1/auth/oidc/signup`: a first sign-in picks its username.
/// Counted like a registration (`auth.registrations_per_hour`). A taken
/// name (409 `username_taken`) or an invalid one leaves the signup token
/// valid for another try.
#[utoipa::path(
    post,
    path = "/auth/oidc/signup",
    tag = "accounts",
    request_body = OidcSignupRequest,
    responses(
        (status = 201, description = "The new account's tokens", body = TokenResponse),
        Errors<(code::BadRequest, code::InvalidUsername, code::UsernameTaken, code::OidcCodeInvalid, code::OidcIdentityTaken, code::RateLimited)>,
    ),
)]
pub async fn signup(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(req): ApiJson<OidcSignupRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), Response> {
    let username = Username::parse(&req.username).map_err(|e| AppError::from(e).into_response())?;
    if let Some(d) = &req.display_name {
        check_display_name(d).map_err(|e| AppError::from(e).into_response())?;
    }
    state
        .throttle
        .register(client.0, Instant::now())
        .map_err(super::accounts::throttled)?;
    signup_checked(&state, username, req)
        .await
        .map_err(IntoResponse::into_response)
}

async fn signup_checked(
    state: &AppState,
    username: Username,
    req: OidcSignupRequest,
) -> AppResult<(StatusCode, Json<TokenResponse>)> {
    let Some(Pending::Signup {
        issuer,
        subject,
        display_name,
        expires_at,
    }) = take(state, &req.signup_token).await?
    else {
        return Err(code_invalid());
    };
    let display_name = req
        .display_name
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| display_name.clone())
        .trim()
        .to_owned();
    let display_name = if display_name.is_empty() {
        username.as_str().to_owned()
    } else {
        display_name
    };
    let identity = OidcIdentity {
        issuer: issuer.clone(),
        subject: subject.clone(),
    };
    let now = now_millis();
    let made = state
        .store
        .create_oidc_user(
            NewUser {
                username: username.as_str().to_owned(),
                username_key: username.canonical(),
                display_name: display_name.clone(),
                // Not a PHC string: no password matches it. The account
                // signs in through its provider only.
                password_hash: "!oidc".to_owned(),
                now,
            },
            identity,
        )
        .await?;
    match made {
        OidcSignup::Created(user) => {
            let tokens =
                super::accounts::open_device(state, user, req.device_name, req.device_public_key)
                    .await?;
            Ok((StatusCode::CREATED, Json(tokens)))
        }
        OidcSignup::UsernameTaken => {
            // Give the token back for another try, with its old expiry.
            let left_ms = expires_at.saturating_sub(now);
            if left_ms > 0 {
                let pending = Pending::Signup {
                    issuer,
                    subject,
                    display_name,
                    expires_at,
                };
                let ttl_s = u64::try_from(left_ms / 1000).unwrap_or(0).max(1);
                put(state, &req.signup_token, &pending, ttl_s).await?;
            }
            Err(AppError::new(
                ErrorCode::UsernameTaken,
                "that username is taken, pick another",
            ))
        }
        OidcSignup::IdentityTaken(_) => Err(identity_taken()),
    }
}

/// `GET /v1/auth/oidc/identities`: the provider accounts linked to mine.
#[utoipa::path(
    get,
    path = "/auth/oidc/identities",
    tag = "accounts",
    security(("bearer" = [])),
    responses((status = 200, description = "Provider accounts linked to mine", body = OidcIdentities)),
)]
pub async fn identities(
    State(state): State<AppState>,
    who: AuthUser,
) -> AppResult<Json<OidcIdentities>> {
    let linked = state.store.oidc_identities_of(who.user_id).await?;
    let oidc = state.oidc.as_deref();
    Ok(Json(OidcIdentities {
        identities: linked
            .into_iter()
            .map(|i| OidcLinkedIdentity {
                provider: oidc
                    .and_then(|o| o.provider_of_issuer(&i.issuer))
                    .map(str::to_owned),
                issuer: i.issuer,
                subject: i.subject,
            })
            .collect(),
    }))
}
