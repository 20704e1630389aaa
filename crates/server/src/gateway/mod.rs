//! The WebSocket gateway (`/v1/ws`): the only module that knows WebSocket
//! framing. One task per connection reads frames, writes its outbound queue
//! and sends heartbeats.

mod connection;
mod rate;
mod sync;
mod typing;

use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use confab_proto::ErrorCode;
use yawc::{CompressionLevel, DeflatePool, IncomingUpgrade, Options};

use crate::config::WsCompression;
use crate::error::AppError;
use crate::extract::WsAuthUser;
use crate::openapi::{code, Errors};
use crate::state::AppState;

/// The socket's read buffer per connection, allocated up front. A large
/// one (yawc's default is 8 KiB, tungstenite's 128 KiB) would dominate an
/// idle connection's memory. Typical frames
/// (pings, acks, chat messages) fit; larger ones are read in several
/// 512-byte steps, a cost paid only by the rare large frame. Measured with
/// `confab bench idle`.
const READ_BUFFER_BYTES: usize = 512;
/// The socket's write buffer per connection, allocated up front; it grows
/// for a large batch and shrinks back once flushed (we flush after each
/// batch of queued frames).
const WRITE_BUFFER_BYTES: usize = 1024;
/// Idle deflate and inflate states kept for reuse. Every connection runs
/// without context takeover, so it holds one only while it compresses or
/// inflates a message: this bounds the memory compression costs to about
/// this many states (a few hundred KiB each), however many connections are
/// open. Roughly the number of messages being (de)compressed at one moment.
const DEFLATE_POOL: usize = 64;

/// The deflate states every connection of this process shares.
static POOL: LazyLock<DeflatePool> = LazyLock::new(|| DeflatePool::new(DEFLATE_POOL));

/// The WebSocket settings of a connection: size caps, buffers and, when
/// `ws.compression` is on, permessage-deflate without context takeover in
/// either direction (RFC 7692 lets the server impose both), frames under
/// `ws.compression_min_bytes` sent as they are.
fn ws_options(config: &crate::config::Config) -> Options {
    // yawc's caps are exclusive; ours is the largest size allowed. The cap
    // holds for the inflated size too: a frame that inflates past it (a
    // compression bomb) is cut off while inflating and closes with 1009.
    let cap = config.limits.hard_frame_cap() + 1;
    let options = Options::default()
        .with_max_payload_read(cap)
        .with_max_read_buffer(cap)
        .with_read_buffer_capacity(READ_BUFFER_BYTES)
        .with_write_buffer_capacity(WRITE_BUFFER_BYTES)
        .with_backpressure_boundary(cap * 2)
        .with_utf8();
    match config.ws.compression {
        WsCompression::Off => options.without_compression(),
        WsCompression::On => options
            .with_compression_level(CompressionLevel::fast())
            .server_no_context_takeover()
            .client_no_context_takeover()
            .with_deflate_pool(POOL.clone())
            .with_compression_threshold(config.ws.compression_min_bytes),
    }
}

/// Whether the client offered our subprotocol (browsers offer `confab.v1`
/// beside their `bearer.<token>`; the answer must name one they offered).
fn offers_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == crate::extract::WS_PROTOCOL)
}

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
        ("Sec-WebSocket-Extensions" = Option<String>, Header, description = "`permessage-deflate` to offer compression (RFC 7692)"),
    ),
    responses(
        (status = 101, description = "Switching protocols: the connection is now a WebSocket", headers(
            ("Sec-WebSocket-Accept" = String),
            ("Sec-WebSocket-Protocol" = String, description = "`confab.v1` when offered"),
            ("Sec-WebSocket-Extensions" = String, description = "`permessage-deflate` with no context takeover both ways, when offered and `ws.compression` is on"),
        )),
        Errors<(code::BadRequest,)>,
    ),
)]
pub async fn upgrade(
    State(state): State<AppState>,
    WsAuthUser(who): WsAuthUser,
    headers: HeaderMap,
    ws: Result<IncomingUpgrade, StatusCode>,
) -> Result<Response, AppError> {
    let Ok(ws) = ws else {
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "not a websocket upgrade (version 13 with a Sec-WebSocket-Key)",
        ));
    };
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
    let (response, upgraded) = ws.upgrade(ws_options(&state.config)).map_err(|e| {
        AppError::new(
            ErrorCode::BadRequest,
            format!("websocket handshake refused: {e}"),
        )
    })?;
    let mut response = response.map(axum::body::Body::new);
    if offers_protocol(&headers) {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(crate::extract::WS_PROTOCOL),
        );
    }
    let compressed = response
        .headers()
        .contains_key(header::SEC_WEBSOCKET_EXTENSIONS);
    crate::metrics::ws_opened(if compressed { "deflate" } else { "none" });
    let tracker = state.connections.clone();
    tokio::spawn(tracker.track_future(async move {
        match upgraded.await {
            Ok(socket) => connection::serve(state, socket, who).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    }));
    Ok(response)
}
