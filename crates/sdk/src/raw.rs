//! A bare WebSocket to the server, without reconnects, ordering or outbox:
//! for tests and benchmarks that want to see (or send) exact frames.

use std::time::Duration;

use confab_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::trust::Trust;

/// The socket type both the raw and the reconnecting connection use.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url`, with `Authorization: Bearer <token>` when a
/// token is given. A refused upgrade becomes [`Error::Http`] (401 for a bad
/// token).
pub(crate) async fn dial(
    url: &str,
    token: Option<&str>,
    trust: Option<&Trust>,
) -> Result<WsStream> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::InvalidInput(format!("websocket url {url:?}: {e}")))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::InvalidInput("access token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    // TCP_NODELAY: frames are small and latency-bound; Nagle plus delayed
    // acks would add 40 ms stalls to multi-segment frames.
    let connector = trust.map(Trust::connector);
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err(Error::from_http_body(resp.status().as_u16(), body))
        }
        Err(e) => Err(ws_error(e)),
    }
}

/// Maps a WebSocket failure to the SDK's error.
pub(crate) fn ws_error(e: WsError) -> Error {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Error::Closed,
        other => Error::Transport(other.to_string()),
    }
}

/// One WebSocket connection, used frame by frame. Nothing is done for you
/// except answering the server's pings (which happens while you read).
#[derive(Debug)]
pub struct RawConnection {
    ws: WsStream,
}

/// Opens a raw connection to a WebSocket URL (`ws://host:port/v1/ws`). With
/// `token`, it goes in the `Authorization` header; without, the URL may
/// carry `?token=` (or the server refuses with 401).
pub async fn connect(url: &str, token: Option<&str>) -> Result<RawConnection> {
    Ok(RawConnection {
        ws: dial(url, token, Trust::from_env().as_ref()).await?,
    })
}

impl Client {
    /// Opens a [`RawConnection`] to this client's server with its session.
    pub async fn connect_raw(&self) -> Result<RawConnection> {
        let token = self.access_token().ok_or(Error::NoSession)?;
        Ok(RawConnection {
            ws: dial(&self.ws_url(), Some(&token), self.trust()).await?,
        })
    }
}

impl RawConnection {
    /// Sends a text frame exactly as given (it need not be valid JSON).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .map_err(ws_error)
    }

    /// Sends a binary frame (which the protocol does not use).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes)).await.map_err(ws_error)
    }

    /// Sends a client frame as JSON text.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        self.send_text(frame.encode()).await
    }

    /// The next text frame, as text. Binary, ping and pong frames are
    /// skipped. `None` once the connection is closed.
    pub async fn next_text(&mut self) -> Option<Result<String>> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => return Some(Ok(t.as_str().to_owned())),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => {
                    return match ws_error(e) {
                        Error::Closed => None,
                        other => Some(Err(other)),
                    }
                }
            }
        }
    }

    /// The next frame, decoded. A text frame that is not a server frame is
    /// an [`Error::Decode`] carrying the text. `None` once closed.
    pub async fn next_frame(&mut self) -> Option<Result<ServerFrame>> {
        Some(
            self.next_text()
                .await?
                .and_then(|t| decode_server_frame(&t)),
        )
    }

    /// The next frame within `timeout`: [`Error::Timeout`] if none came,
    /// [`Error::Closed`] if the connection closed.
    pub async fn next_frame_within(&mut self, timeout: Duration) -> Result<ServerFrame> {
        match tokio::time::timeout(timeout, self.next_frame()).await {
            Err(_) => Err(Error::Timeout),
            Ok(None) => Err(Error::Closed),
            Ok(Some(r)) => r,
        }
    }

    /// Reads (skipping other frames) until the server closes the
    /// connection, within `timeout`: the close frame's code, or `None` when
    /// the connection ended without one. [`Error::Timeout`] if it stays open.
    pub async fn close_code_within(&mut self, timeout: Duration) -> Result<Option<u16>> {
        let wait = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout)
    }

    /// Sends a close frame and waits (up to a second) for the server's.
    pub async fn close(mut self) -> Result<()> {
        self.ws
            .close(None)
            .await
            .map_err(ws_error)
            .or_else(|e| match e {
                Error::Closed => Ok(()),
                other => Err(other),
            })?;
        let drain = async { while self.ws.next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }
}

/// Decodes a server frame from JSON text.
pub fn decode_server_frame(text: &str) -> Result<ServerFrame> {
    serde_json::from_str(text).map_err(|e| {
        let shown: String = text.chars().take(200).collect();
        Error::Decode(format!("{e} in frame {shown:?}"))
    })
}
