//! The HTTP door: the JSON API's handlers (`/v1`), the operational
//! endpoints and the browser app.
//! The server assembles these routes with media's and the WebSocket
//! upgrade (`server.rs`).

mod accounts;
mod calls;
mod conversations;
mod friends;
mod groups;
mod health;
mod keys;
mod messages;
mod search;
mod users;
mod web;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::state::AppState;

pub use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// The JSON API's routes, to be nested under `/v1` (media and the
/// WebSocket upgrade are added where the server is assembled).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(accounts::register))
        .route("/auth/login", post(accounts::login))
        .route("/auth/refresh", post(accounts::refresh))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/password", post(accounts::change_password))
        .route("/users/me", get(users::me).patch(users::update_me))
        .route("/users", get(users::search))
        .route("/users/{id}", get(users::by_id))
        .route("/users/{id}/devices", get(keys::devices))
        .route("/users/{id}/key-packages", get(keys::claim))
        .route("/keys/packages", get(keys::stock).post(keys::upload))
        .route(
            "/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/conversations/{id}",
            get(conversations::get_one).patch(groups::update),
        )
        .route(
            "/conversations/{id}/members",
            get(groups::list).post(groups::add),
        )
        .route(
            "/conversations/{id}/members/{user_id}",
            delete(groups::remove).patch(groups::set_role),
        )
        .route(
            "/friends/requests",
            get(friends::list_requests).post(friends::request),
        )
        .route("/friends/requests/{id}", delete(friends::cancel))
        .route("/friends/requests/{id}/accept", post(friends::accept))
        .route("/friends/requests/{id}/decline", post(friends::decline))
        .route("/friends", get(friends::list))
        .route("/friends/{user_id}", delete(friends::unfriend))
        .route("/blocks", get(friends::blocks))
        .route(
            "/blocks/{user_id}",
            put(friends::block).delete(friends::unblock),
        )
        .route(
            "/conversations/{id}/messages",
            get(conversations::history).post(conversations::send),
        )
        .route("/conversations/{id}/read", post(conversations::read))
        .route(
            "/conversations/{id}/messages/{seq}",
            patch(messages::edit).delete(messages::delete),
        )
        .route(
            "/conversations/{id}/messages/{seq}/reactions/{emoji}",
            put(messages::react_on).delete(messages::react_off),
        )
        .route("/search/messages", get(search::messages))
        .route("/calls/ice-servers", get(calls::ice_servers))
}

/// Health, readiness and (with a token) metrics, at the root.
pub fn operational_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics_with_token))
}

/// Wraps the assembled routes: the browser app as the fallback, the body
/// size limit, and the body timeout (a body that stalls is cut off; one
/// that keeps moving may take as long as it needs, e.g. a large upload).
pub fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.config.limits.max_http_body_bytes;
    let body_timeout = std::time::Duration::from_secs(state.config.http.body_timeout_s.max(1));
    routes
        .fallback(web::serve)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

/// The router of the separate metrics address (`http.metrics_listen`):
/// `/metrics` without a token, nothing else.
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(health::metrics))
}
