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
mod oidc;
mod search;
mod users;
mod web;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// The JSON API's routes, to be nested under `/v1` (media and the
/// WebSocket upgrade are added where the server is assembled). Each
/// `routes!` names the handlers of one path; their `#[utoipa::path]`
/// annotations give the method, the path and the document's entry.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::change_password))
        .routes(routes!(oidc::providers))
        .routes(routes!(oidc::start))
        .routes(routes!(oidc::link))
        .routes(routes!(oidc::callback))
        .routes(routes!(oidc::exchange))
        .routes(routes!(oidc::signup))
        .routes(routes!(oidc::identities))
        .routes(routes!(users::me, users::update_me))
        .routes(routes!(users::search))
        .routes(routes!(users::by_id))
        .routes(routes!(keys::devices))
        .routes(routes!(keys::claim))
        .routes(routes!(keys::stock, keys::upload))
        .routes(routes!(conversations::list, conversations::create))
        .routes(routes!(conversations::get_one, groups::update))
        .routes(routes!(groups::list, groups::add))
        .routes(routes!(groups::remove, groups::set_role))
        .routes(routes!(friends::list_requests, friends::request))
        .routes(routes!(friends::cancel))
        .routes(routes!(friends::accept))
        .routes(routes!(friends::decline))
        .routes(routes!(friends::list))
        .routes(routes!(friends::unfriend))
        .routes(routes!(friends::blocks))
        .routes(routes!(friends::block, friends::unblock))
        .routes(routes!(conversations::history, conversations::send))
        .routes(routes!(conversations::read))
        .routes(routes!(messages::edit, messages::delete))
        .routes(routes!(messages::react_on, messages::react_off))
        .routes(routes!(search::messages))
        .routes(routes!(calls::ice_servers))
}

/// Health, readiness and (with a token) metrics, at the root.
pub fn operational_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics_with_token))
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
