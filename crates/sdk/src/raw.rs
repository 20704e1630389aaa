//! A bare WebSocket to the server, without reconnects, ordering or outbox:
//! for tests and benchmarks that want to see (or send) exact frames.

use std::time::Duration;

use confab_proto::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use yawc::{Frame, OpCode, WebSocketError};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::socket::{dial, Compression, WsStream};
use crate::trust::Trust;

/// Maps a WebSocket failure to the SDK's error.
pub(crate) fn ws_error(e: WebSocketError) -> Error {
    match e {
        WebSocketError::ConnectionClosed => Error::Closed,
        other => Error::Transport(other.to_string()),
    }
}

/// One WebSocket connection, used frame by frame. Nothing is done for you
/// except answering the server's pings (which happens while you read).
pub struct RawConnection {
    ws: WsStream,
    compressed: bool,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("compressed", &self.compressed)
            .finish()
    }
}

/// Opens a raw connection to a WebSocket URL (`ws://host:port/v1/ws`). With
/// `token`, it goes in the `Authorization` header; without, the URL may
/// carry `?token=` (or the server refuses with 401).
/// permessage-deflate is offered (see [`connect_with`]).
pub async fn connect(url: &str, token: Option<&str>) -> Result<RawConnection> {
    connect_with(url, token, Compression::Offer).await
}

/// [`connect`], choosing whether to offer permessage-deflate.
pub async fn connect_with(
    url: &str,
    token: Option<&str>,
    compression: Compression,
) -> Result<RawConnection> {
    let dialed = dial(url, token, Trust::from_env().as_ref(), compression).await?;
    Ok(RawConnection {
        ws: dialed.ws,
        compressed: dialed.compressed,
    })
}

impl Client {
    /// Opens a [`RawConnection`] to this client's server with its session.
    /// permessage-deflate is offered.
    pub async fn connect_raw(&self) -> Result<RawConnection> {
        self.connect_raw_with(Compression::Offer).await
    }

    /// [`Client::connect_raw`], choosing whether to offer permessage-deflate.
    pub async fn connect_raw_with(&self, compression: Compression) -> Result<RawConnection> {
        let token = self.access_token().ok_or(Error::NoSession)?;
        let dialed = dial(&self.ws_url(), Some(&token), self.trust(), compression).await?;
        Ok(RawConnection {
            ws: dialed.ws,
            compressed: dialed.compressed,
        })
    }
}

impl RawConnection {
    /// Whether the server agreed to permessage-deflate (RFC 7692) on this
    /// connection.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Sends a text frame exactly as given (it need not be valid JSON).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws
            .send(Frame::text(text.into()))
            .await
            .map_err(ws_error)
    }

    /// Sends a binary frame (which the protocol does not use).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Frame::binary(bytes)).await.map_err(ws_error)
    }

    /// Sends a client frame as JSON text.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        self.send_text(frame.encode()).await
    }

    /// The next text frame, as text. Binary, ping and pong frames are
    /// skipped. `None` once the connection is closed.
    pub async fn next_text(&mut self) -> Option<Result<String>> {
        loop {
            match self.ws.next_frame().await {
                Ok(f) if f.opcode() == OpCode::Text => {
                    return Some(
                        String::from_utf8(f.into_payload().to_vec())
                            .map_err(|_| Error::Decode("text frame is not utf-8".into())),
                    )
                }
                Ok(f) if f.opcode() == OpCode::Close => return None,
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
                match self.ws.next_frame().await {
                    Ok(f) if f.opcode() == OpCode::Close => return f.close_code().map(u16::from),
                    Ok(_) => continue,
                    Err(_) => return None,
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
            .send(Frame::close(yawc::close::CloseCode::Normal, b""))
            .await
            .map_err(ws_error)
            .or_else(|e| match e {
                Error::Closed => Ok(()),
                other => Err(other),
            })?;
        let drain = async { while self.ws.next_frame().await.is_ok() {} };
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
