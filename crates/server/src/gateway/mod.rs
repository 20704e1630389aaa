//! The WebSocket gateway (`/v1/ws`): the only module that knows WebSocket
//! framing. One task per connection reads frames, writes its outbound queue
//! and sends heartbeats.

mod connection;
mod rate;
mod sync;
mod typing;

use std::sync::atomic::Ordering;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;

use crate::error::AppError;
use crate::extract::WsAuthUser;
use crate::openapi::{code, Errors};
use crate::state::AppState;

/// tungstenite's read buffer per connection, allocated up front. Its default
/// (128 KiB) would dominate an idle connection's memory. Typical frames
/// (pings, acks, chat messages) fit; larger ones are read in several
/// 512-byte steps, a cost paid only by the rare large frame. Measured with
/// `confab bench idle`.
const READ_BUFFER_BYTES: usize = 512;
/// Bytes gathered before a write reaches the socket (we flush after each
/// batch of queued frames anyway).
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /v1/ws`: authenticates, then upgrades.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "gateway",
    description = "Upgrades to a WebSocket (RFC 6455) that speaks Confab's JSON frames \
        (docs/protocol.md): the server's `hello` first, then `send`, `sync`, `read`, \
        `typing`, `call`, … and their answers. The access token comes in `Authorization` \
        or, from browsers, as the subprotocol `bearer.<token>` offered beside `confab.v1` \
        (`Sec-WebSocket-Protocol`); never in the URL.",
    security(("bearer" = [])),
    params(
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "RFC 6455 key"),
        ("Sec-WebSocket-Protocol" = Option<String>, Header, description = "`confab.v1, bearer.<access token>` (browsers)"),
    ),
    responses(
        (status = 101, description = "Switching protocols: the connection is now a WebSocket", headers(
            ("Sec-WebSocket-Accept" = String),
            ("Sec-WebSocket-Protocol" = String, description = "`confab.v1` when offered"),
        )),
        Errors<(code::BadRequest,)>,
    ),
)]
pub async fn upgrade(
    State(state): State<AppState>,
    WsAuthUser(who): WsAuthUser,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Not an upgrade request (a plain GET, or a malformed handshake): the
    // API's error shape rather than axum's plain text.
    let ws = ws.map_err(|e| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("this endpoint takes a WebSocket upgrade: {}", e.body_text()),
        )
    })?;
    let max = state.config.limits.max_connections;
    if state.open_connections.load(Ordering::Relaxed) >= max {
        crate::metrics::connection_refused();
        // Once a second at most: a full node is refused many times a second.
        let now_s = crate::clock::now_millis().max(0) as u64 / 1000;
        if state.limit_warned_s.swap(now_s, Ordering::Relaxed) != now_s {
            tracing::warn!(max, "connection limit reached; refusing upgrades (see confab_connections_refused_total)");
        }
        return Err(AppError::new(
            ErrorCode::Unavailable,
            "this node is at its connection limit, try another node or later",
        ));
    }
    let limits = &state.config.limits;
    let (user_count, device_count) = state.hub.connection_counts(who.user_id, who.device_id);
    if device_count >= limits.max_connections_per_device {
        crate::metrics::connection_capped("device");
        return Err(AppError::new(
            ErrorCode::Unavailable,
            format!(
                "this device has {} connections open on this node, the most allowed: close one first",
                limits.max_connections_per_device
            ),
        ));
    }
    if user_count >= limits.max_connections_per_user {
        crate::metrics::connection_capped("user");
        return Err(AppError::new(
            ErrorCode::Unavailable,
            format!(
                "your devices have {} connections open on this node, the most allowed: close one first",
                limits.max_connections_per_user
            ),
        ));
    }
    if state.shutdown.is_cancelled() {
        return Err(AppError::new(
            ErrorCode::Unavailable,
            "server is shutting down",
        ));
    }
    let cap = state.config.limits.hard_frame_cap();
    let tracker = state.connections.clone();
    Ok(ws
        // Browsers offer `confab.v1` beside their `bearer.<token>`; the
        // answer must name one they offered.
        .protocols([crate::extract::WS_PROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(cap * 2)
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| tracker.track_future(connection::serve(state, socket, who)))
        .into_response())
}
