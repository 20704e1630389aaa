//! `GET /v1/calls/ice-servers`: the STUN/TURN servers (with fresh TURN
//! credentials) a signed-in client uses for a call.

use axum::extract::State;
use axum::Json;
use confab_proto::api::IceServers;

use crate::auth::AuthUser;
use crate::state::AppState;

/// `GET /v1/calls/ice-servers`.
#[utoipa::path(
    get,
    path = "/calls/ice-servers",
    tag = "calls",
    security(("bearer" = [])),
    responses((status = 200, description = "STUN and TURN servers, with fresh TURN credentials", body = IceServers)),
)]
pub async fn ice_servers(State(state): State<AppState>, who: AuthUser) -> Json<IceServers> {
    let now_s = crate::clock::now_millis().max(0) as u64 / 1000;
    Json(crate::chat::ice::ice_servers(
        &state.config.calls,
        who.user_id,
        now_s,
    ))
}
