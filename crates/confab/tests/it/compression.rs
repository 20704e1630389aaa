//! WebSocket compression (issue 15): permessage-deflate (RFC 7692) is
//! agreed with clients that offer it (the SDK, browsers: see the Chromium
//! step in e2e/chat.test.mjs), plain clients keep working, `ws.compression
//! = off` declines, and a frame that inflates past the hard cap (a
//! compression bomb) closes only its own connection, with 1009.

use std::io::Write as _;

use confab_sdk::proto::{ClientFrame, MessageKind, ServerFrame};
use confab_sdk::{Compression, RawConnection};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{befriend, connect, direct, spawn_app, spawn_app_with, text, WAIT};

/// About 10 KB of UTF-8, mostly Chinese, no two lines alike.
fn ten_kb_text() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 10_000 {
        s.push_str(&format!("第{i}段：压缩的消息应该完整到达 (segment {i}).\n"));
        i += 1;
    }
    s
}

/// Reads frames until a `message` frame, which it returns.
async fn next_message(raw: &mut RawConnection) -> confab_sdk::proto::MessageRecord {
    loop {
        match raw.next_frame_within(WAIT).await.expect("a frame") {
            ServerFrame::Message(m) => return m,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_sdk_negotiates_deflate_and_a_10_kb_text_arrives_intact() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let conv = direct(&ann, &bob_user).await;

    // Bob listens on a raw socket (to see the agreement) and on the SDK's
    // reconnecting connection; Ann sends with the SDK.
    let mut raw = bob.connect_raw().await.expect("raw connect");
    assert!(
        raw.is_compressed(),
        "the server agreed to permessage-deflate"
    );
    let mut bob_conn = connect(&bob).await;
    let ann_conn = connect(&ann).await;
    let big = ten_kb_text();
    ann_conn.send_text(conv.id, &big).await.expect("send");

    let m = next_message(&mut raw).await;
    assert_eq!(m.body["text"].as_str(), Some(big.as_str()));
    let m = bob_conn.next_message(WAIT).await.expect("message");
    assert_eq!(text(&m), big);

    // And the other way: a compressed 10 KB frame from the raw socket.
    let reply = format!("{big}回复");
    raw.send_frame(&ClientFrame::Send {
        client_msg_id: "big-reply".into(),
        conversation_id: conv.id,
        kind: MessageKind::Text,
        body: json!({ "text": reply }),
    })
    .await
    .expect("send");
    loop {
        if let ServerFrame::Ack { client_msg_id, .. } =
            raw.next_frame_within(WAIT).await.expect("ack")
        {
            assert_eq!(client_msg_id, "big-reply");
            break;
        }
    }
    let history = crate::support::all_history(&ann, conv.id).await;
    assert_eq!(history.last().map(text), Some(reply.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn clients_that_do_not_offer_deflate_still_work() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let conv = direct(&bob, &ann_user).await;
    let big = ten_kb_text();

    // A plain tokio-tungstenite client, which offers no extension.
    let token = ann.session().expect("session").access_token;
    let mut request = format!("ws://{}/v1/ws", app.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    let hello = ws.next().await.expect("a frame").expect("ok");
    assert!(hello
        .to_text()
        .expect("text")
        .contains("\"type\":\"hello\""));

    // The SDK with compression off, sending the 10 KB text to it.
    let mut raw = bob
        .connect_raw_with(Compression::Off)
        .await
        .expect("raw connect");
    assert!(!raw.is_compressed());
    raw.send_frame(&ClientFrame::Send {
        client_msg_id: "plain".into(),
        conversation_id: conv.id,
        kind: MessageKind::Text,
        body: json!({ "text": big }),
    })
    .await
    .expect("send");
    let got = tokio::time::timeout(WAIT, async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                if let Ok(ServerFrame::Message(m)) = serde_json::from_str(t.as_str()) {
                    return m;
                }
            }
        }
        panic!("the plain socket closed before the message");
    })
    .await
    .expect("the message within the wait");
    assert_eq!(got.body["text"].as_str(), Some(big.as_str()));
    let _ = ws.send(Message::Close(None)).await;
    app.stop().await;
}

#[tokio::test]
async fn compression_off_declines_the_offer() {
    let app = spawn_app_with(|c| {
        c.ws.compression = confab_server::config::WsCompression::Off;
    })
    .await;
    let (ann, _) = app.user("ann").await;
    let mut raw = ann.connect_raw().await.expect("raw connect");
    assert!(!raw.is_compressed(), "ws.compression = off declines");
    crate::support::hello(&mut raw).await;
    raw.send_frame(&ClientFrame::Ping {
        nonce: Some(json!("p")),
    })
    .await
    .expect("ping");
    loop {
        if let ServerFrame::Pong { .. } = raw.next_frame_within(WAIT).await.expect("pong") {
            break;
        }
    }
    app.stop().await;
}

/// One masked client frame (FIN, `rsv1` for a compressed message).
fn client_frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one server frame (unmasked): its opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> std::io::Result<(u8, bool, Vec<u8>)> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).await?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).await?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, head[0] & 0x40 != 0, payload))
}

#[tokio::test]
async fn a_compression_bomb_closes_only_its_connection_with_1009() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let conv = direct(&bob, &ann_user).await;
    let mut bob_conn = connect(&bob).await;
    // The bomb comes from a user with no friends: no presence frames.
    let (eve, _) = app.user("eve").await;

    // The handshake by hand, offering permessage-deflate.
    let token = eve.session().expect("session").access_token;
    let mut tcp = TcpStream::connect(app.addr).await.expect("tcp");
    let request = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Bearer {token}\r\n\r\n",
        app.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("response");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).expect("ascii").to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate"),
        "{head}"
    );
    let (opcode, _, hello) = read_frame(&mut tcp).await.expect("hello");
    assert_eq!(opcode, 1);
    assert!(String::from_utf8_lossy(&hello).contains("\"hello\""));

    // 64 MiB of JSON that deflates to about 64 KB: far under the hard cap
    // (1 MiB) on the wire, 64 times over it once inflated.
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflate
        .write_all(b"{\"type\":\"ping\",\"nonce\":\"")
        .expect("deflate");
    let block = vec![b'z'; 1024 * 1024];
    for _ in 0..64 {
        deflate.write_all(&block).expect("deflate");
    }
    deflate.write_all(b"\"}").expect("deflate");
    let mut bomb = deflate.finish().expect("deflate");
    // RFC 7692 7.2.1: the trailing empty block is left off; a final block
    // is fine too.
    assert!(bomb.len() < 200 * 1024, "{} bytes", bomb.len());
    bomb.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    tcp.write_all(&client_frame(1, true, &bomb))
        .await
        .expect("bomb");

    // The connection gets a 1009 close and nothing else, then ends.
    let (opcode, _, payload) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
        .await
        .expect("an answer in time")
        .expect("a close frame");
    assert_eq!(opcode, 8, "only a close frame, got opcode {opcode}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "nothing after the close: {} bytes",
        rest.len()
    );

    // Everyone else carries on: Eve reconnects, Ann and Bob chat.
    let _eve_conn = connect(&eve).await;
    let ann_conn = connect(&ann).await;
    ann_conn
        .send_text(conv.id, "还在 still here")
        .await
        .expect("send");
    let m = bob_conn.next_message(WAIT).await.expect("message");
    assert_eq!(text(&m), "还在 still here");
    app.stop().await;
}
