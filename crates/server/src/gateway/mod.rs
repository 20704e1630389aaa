//! The WebSocket gateway (`/v1/ws`): the only module that knows WebSocket
//! framing. One task per connection reads frames, writes its outbound queue
//! and sends heartbeats.

mod connection;
pub mod outbound;
mod rate;
mod sync;

use std::sync::atomic::Ordering;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use confab_proto::ErrorCode;

use crate::auth::AuthUser;
use crate::error::AppError;
use crate::state::AppState;

/// tungstenite's read buffer per connection. Its default (128 KiB) would
/// dominate an idle connection's memory; frames larger than this are read
/// in several steps.
const READ_BUFFER_BYTES: usize = 2 * 1024;
/// Bytes gathered before a write reaches the socket (we flush after each
/// batch of queued frames anyway).
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /v1/ws`: authenticates, then upgrades.
pub async fn upgrade(
    State(state): State<AppState>,
    who: AuthUser,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let max = state.config.limits.max_connections;
    if state.open_connections.load(Ordering::Relaxed) >= max {
        crate::metrics::connection_refused();
        tracing::warn!(max, "connection limit reached; refusing upgrade");
        return Err(AppError::new(
            ErrorCode::Unavailable,
            "this node is at its connection limit, try another node or later",
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
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(cap * 2)
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| tracker.track_future(connection::serve(state, socket, who)))
        .into_response())
}
