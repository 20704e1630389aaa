//! Lean WebSocket clients for load generation: small buffers, no SDK
//! machinery, frames parsed only as far as the bench needs.

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A bench connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/v1/ws` with a bearer token.
pub async fn dial(base_url: &str, token: &str) -> anyhow::Result<Ws> {
    let url = confab_sdk::ws_url(base_url);
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).context("token")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true).await?;
    Ok(ws)
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
