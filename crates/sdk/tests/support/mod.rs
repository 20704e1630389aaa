//! A scripted protocol peer for the SDK's edge cases: each accepted
//! WebSocket is handed to the test, which plays the server frame by frame.
//! It exists for behaviour a correct server shows only under races or
//! failures (live messages overtaking a sync, a gap left by a dropped
//! socket, silence past the idle timeout, one of several servers down),
//! which cannot be produced on demand from the real one. Everything else
//! is tested against the real server in `crates/confab/tests/`. It also answers `POST /v1/auth/refresh` and
//! `GET /v1/users/me` over plain HTTP, enough for the token-refresh paths.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_proto::api::{TokenResponse, User};
use confab_proto::{ClientFrame, ServerFrame};
use confab_sdk::{Client, Session};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const WAIT: Duration = Duration::from_secs(5);

/// What the fake server was asked to do and what it saw.
#[derive(Default)]
pub struct Script {
    /// Refuse this many upcoming WebSocket upgrades with 401.
    pub reject_upgrades: AtomicUsize,
    /// The access token the server accepts (others get 401 on HTTP).
    pub valid_token: Mutex<String>,
    /// Refresh calls seen.
    pub refreshes: AtomicUsize,
    /// Authorization headers of accepted upgrades.
    pub upgrade_tokens: Mutex<Vec<String>>,
}

pub struct FakeServer {
    pub base_url: String,
    pub script: Arc<Script>,
    conns: mpsc::Receiver<FakeConn>,
}

pub struct FakeConn {
    ws: WebSocketStream<TcpStream>,
}

pub fn user(id: i64) -> User {
    User {
        id,
        username: format!("user{id}"),
        display_name: format!("User {id}"),
        avatar_media_id: None,
        status_text: None,
        created_at: 0,
        hide_presence: None,
    }
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Script::default());
        *script.valid_token.lock().expect("lock") = "access-0".into();
        let (tx, conns) = mpsc::channel(16);
        let s = Arc::clone(&script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                let tx = tx.clone();
                tokio::spawn(async move { serve(stream, s, tx).await });
            }
        });
        FakeServer {
            base_url: format!("http://{addr}"),
            script,
            conns,
        }
    }

    /// A client logged in as user 1, device 2, with token `access-0`.
    pub fn client(&self) -> Client {
        let session = Session {
            access_token: "access-0".into(),
            refresh_token: "refresh-0".into(),
            access_expires_at: i64::MAX,
            user: user(1),
            device_id: 2,
            base_url: self.base_url.clone(),
        };
        Client::with_session(&self.base_url, session)
    }

    /// The next accepted WebSocket.
    pub async fn accept(&mut self) -> FakeConn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("no connection in time")
            .expect("server gone")
    }

    /// The next WebSocket, after sending `hello` and reading the `sync`.
    pub async fn accept_synced(&mut self) -> (FakeConn, ClientFrame) {
        let mut conn = self.accept().await;
        conn.hello().await;
        let sync = conn.recv().await;
        assert!(matches!(sync, ClientFrame::Sync { .. }), "{sync:?}");
        (conn, sync)
    }
}

// The callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, script: Arc<Script>, tx: mpsc::Sender<FakeConn>) {
    let mut head = [0u8; 64];
    let n = stream.peek(&mut head).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    if head.starts_with("POST /v1/auth/refresh") || head.starts_with("GET /v1/users/me") {
        serve_http(stream, &script).await;
        return;
    }
    let s = Arc::clone(&script);
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let reject = s
            .reject_upgrades
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if reject {
            let body = r#"{"error":{"code":"unauthorized","message":"token expired"}}"#;
            let mut err = ErrorResponse::new(Some(body.to_owned()));
            *err.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        s.upgrade_tokens.lock().expect("lock").push(auth);
        Ok(resp)
    };
    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await {
        let _ = tx.send(FakeConn { ws }).await;
    }
}

/// Just enough HTTP/1.1 for refresh and `users/me`.
async fn serve_http(mut stream: TcpStream, script: &Script) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[len..]).await else {
            return;
        };
        if n == 0 {
            return;
        }
        len += n;
        let text = String::from_utf8_lossy(&buf[..len]);
        if let Some(end) = text.find("\r\n\r\n") {
            let body_len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if len >= end + 4 + body_len {
                break;
            }
        }
    }
    let req = String::from_utf8_lossy(&buf[..len]).to_string();
    let valid = script.valid_token.lock().expect("lock").clone();
    let (status, body) = if req.starts_with("POST /v1/auth/refresh") {
        let n = script.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("access-{n}");
        *script.valid_token.lock().expect("lock") = token.clone();
        let tokens = TokenResponse {
            access_token: token,
            refresh_token: format!("refresh-{n}"),
            expires_in: 900,
            user: user(1),
            device_id: 2,
        };
        ("200 OK", serde_json::to_string(&tokens).expect("json"))
    } else if req.contains(&format!("Bearer {valid}")) {
        ("200 OK", serde_json::to_string(&user(1)).expect("json"))
    } else {
        (
            "401 Unauthorized",
            r#"{"error":{"code":"unauthorized","message":"token expired"}}"#.to_owned(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl FakeConn {
    pub async fn hello(&mut self) {
        self.send(ServerFrame::Hello {
            user_id: 1,
            device_id: 2,
            server_time: 0,
            heartbeat_s: 20,
            receipts_max_group: 100,
            typing_timeout_ms: 6000,
        })
        .await;
    }

    pub async fn send(&mut self, frame: ServerFrame) {
        self.send_text(&frame.encode()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("fake server send");
    }

    /// The next client frame within [`WAIT`].
    pub async fn recv(&mut self) -> ClientFrame {
        self.try_recv(WAIT).await.expect("no client frame in time")
    }

    /// The next client frame within `wait`, or `None` (timeout or closed).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<ClientFrame> {
        let read = async {
            loop {
                match self.ws.next().await? {
                    Ok(Message::Text(t)) => {
                        return Some(ClientFrame::decode(t.as_str()).expect("client frame"))
                    }
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    /// Next client frame that is not a `delivered` (those depend on batching).
    pub async fn recv_skipping_delivered(&mut self) -> ClientFrame {
        loop {
            let f = self.recv().await;
            if !matches!(f, ClientFrame::Delivered { .. }) {
                return f;
            }
        }
    }

    /// Whether the client closed the socket (close frame or EOF) within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let read = async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(wait, read).await.is_ok()
    }
}
