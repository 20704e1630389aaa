//! Regression tests for the holes a review found by attacking a running
//! server (issue 17): each fails without its fix.

use std::time::Duration;

use crate::support::*;
use confab_sdk::proto::{ClientFrame, ServerFrame};
use confab_sdk::{ErrorCode, MessageKind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The 40-byte M4A: an `ftyp` box, then a box whose 64-bit size wraps the
/// walk's offset back to 0.
fn looping_m4a() -> Vec<u8> {
    let mut file = b"\0\0\0\x10ftypM4A \0\0\0\0".to_vec();
    file.extend_from_slice(&1u32.to_be_bytes());
    file.extend_from_slice(b"free");
    file.extend_from_slice(&(u64::MAX - 15).to_be_bytes());
    file.extend_from_slice(&[0; 8]);
    assert_eq!(file.len(), 40);
    file
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG that declares `w` x `h` pixels: a real 1x1 image with its IHDR
/// size rewritten (and the CRC fixed).
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::new(1, 1);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A small JPEG whose frame header claims `side` x `side` pixels, with EXIF
/// orientation 6 (which once made the server decode and rotate it).
fn jpeg_bomb(side: u16) -> Vec<u8> {
    let img = image::RgbImage::new(8, 8);
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .expect("jpeg");
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&6u16.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut seg = b"Exif\0\0".to_vec();
    seg.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&seg);
    out.extend_from_slice(&jpeg[2..]);
    let sof = out
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF");
    out[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    out
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn login_token(base_url: &str, name: &str) -> String {
    let client = confab_sdk::Client::new(base_url);
    client
        .register(name, PASSWORD, None)
        .await
        .expect("register");
    client
        .login(name, PASSWORD, None)
        .await
        .expect("login")
        .access_token
}

async fn upload_raw(base_url: &str, token: &str, mime: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base_url}/v1/media"))
        .bearer_auth(token)
        .header("content-type", mime)
        .body(body)
        .send()
        .await
        .expect("upload request")
}

async fn error_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.expect("error body");
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn looping_m4a_is_refused_and_the_server_still_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = spawn_binary(dir.path()).await;
    let token = login_token(&server.base_url, "ann").await;
    let resp = tokio::time::timeout(
        WAIT,
        upload_raw(&server.base_url, &token, "audio/mp4", looping_m4a()),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "bad_request");

    // SIGTERM ends the process by itself.
    server.sigterm();
    let exited = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("the server exits after SIGTERM")
        .expect("wait");
    assert!(exited.success(), "clean exit: {exited:?}");
}

#[tokio::test]
async fn image_bombs_are_refused_before_decoding_and_memory_stays_flat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = spawn_binary(dir.path()).await;
    let token = login_token(&server.base_url, "ann").await;
    let pid = server.child.id().expect("pid");
    // Warm up the upload path with an ordinary image first.
    let ok = upload_raw(&server.base_url, &token, "image/png", png_bomb(64, 64)).await;
    assert!(ok.status().is_client_error() || ok.status().is_success());
    let before = rss_kib(pid);
    for _ in 0..3 {
        let resp = upload_raw(
            &server.base_url,
            &token,
            "image/png",
            png_bomb(20_000, 20_000),
        )
        .await;
        assert_eq!(resp.status(), 413);
        assert_eq!(error_code(resp).await, "media_too_large");
        let resp = upload_raw(&server.base_url, &token, "image/jpeg", jpeg_bomb(14_000)).await;
        assert_eq!(resp.status(), 413);
        assert_eq!(error_code(resp).await, "media_too_large");
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 50 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Creates a tus upload of `length` bytes; the answer's status and code.
async fn tus_create(base_url: &str, token: &str, length: u64) -> (u16, String, Option<String>) {
    let resp = reqwest::Client::new()
        .post(format!("{base_url}/v1/media/uploads/"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .send()
        .await
        .expect("create");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let code = if status >= 400 {
        error_code(resp).await
    } else {
        String::new()
    };
    (status, code, location)
}

#[tokio::test]
async fn tus_uploads_in_progress_count_against_the_quota_and_expire() {
    let app = spawn_app_with(|c| {
        c.media.user_quota_bytes = 2 * 1024 * 1024;
        c.media.max_open_uploads = 3;
        c.media.upload_expiry_s = 2;
    })
    .await;
    let token = login_token(&app.base_url, "ann").await;
    let part = 900 * 1024;
    let (s1, _, first) = tus_create(&app.base_url, &token, part).await;
    let (s2, _, _) = tus_create(&app.base_url, &token, part).await;
    assert_eq!((s1, s2), (201, 201));
    // A third would pass the 2 MiB quota: refused, and so is a plain
    // upload that would.
    let (s3, code, _) = tus_create(&app.base_url, &token, part).await;
    assert_eq!((s3, code.as_str()), (413, "media_too_large"));
    let plain = upload_raw(
        &app.base_url,
        &token,
        "application/octet-stream",
        vec![7u8; 300 * 1024],
    )
    .await;
    assert_eq!(plain.status(), 413);

    // Small ones fit the quota but not the cap on open uploads.
    let (s4, _, _) = tus_create(&app.base_url, &token, 10).await;
    assert_eq!(s4, 201);
    let (s5, code, _) = tus_create(&app.base_url, &token, 10).await;
    assert_eq!((s5, code.as_str()), (429, "rate_limited"));

    // Abandoned uploads are deleted, and their room comes back.
    let first = first.expect("location");
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let resp = reqwest::Client::new()
                .head(format!("{}{first}", app.base_url))
                .bearer_auth(&token)
                .header("tus-resumable", "1.0.0")
                .send()
                .await
                .expect("head");
            if resp.status() == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the abandoned upload was not deleted");
    let (s6, _, _) = tus_create(&app.base_url, &token, part).await;
    assert_eq!(s6, 201);
}

fn call(to: i64, payload: serde_json::Value) -> ClientFrame {
    ClientFrame::Call {
        call_id: "c1".into(),
        conversation_id: None,
        to_user_id: to,
        signal: confab_sdk::CallSignal::Offer,
        payload,
    }
}

#[tokio::test]
async fn calls_need_a_shared_conversation_and_no_block() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (eve, _) = app.user("eve").await;
    let mut bob_conn = raw_connect(&bob).await;

    // A stranger cannot ring anyone.
    let mut eve_conn = raw_connect(&eve).await;
    eve_conn
        .send_frame(&call(bob_user.id, json!({"sdp": "v=0"})))
        .await
        .expect("send");
    assert_eq!(expect_error(&mut eve_conn).await.0, ErrorCode::Forbidden);

    // Members of a conversation can; a payload over the limit cannot.
    direct(&ann, &bob_user).await;
    let mut ann_conn = raw_connect(&ann).await;
    ann_conn
        .send_frame(&call(bob_user.id, json!({"sdp": "x".repeat(20_000)})))
        .await
        .expect("send");
    assert_eq!(
        expect_error(&mut ann_conn).await.0,
        ErrorCode::MessageTooLarge
    );
    ann_conn
        .send_frame(&call(bob_user.id, json!({"sdp": "v=0"})))
        .await
        .expect("send");
    loop {
        if let ServerFrame::Call { signal, .. } =
            bob_conn.next_frame_within(WAIT).await.expect("call")
        {
            assert_eq!(signal, confab_sdk::CallSignal::Offer);
            break;
        }
    }

    // After a block, neither side can ring the other.
    bob.block(ann.session().expect("session").user.id)
        .await
        .expect("block");
    ann_conn
        .send_frame(&call(bob_user.id, json!({"sdp": "v=0"})))
        .await
        .expect("send");
    assert_eq!(expect_error(&mut ann_conn).await.0, ErrorCode::Blocked);
    // Nothing reached bob.
    let ping = ClientFrame::Ping {
        nonce: Some(json!("after")),
    };
    bob_conn.send_frame(&ping).await.expect("ping");
    loop {
        match bob_conn.next_frame_within(WAIT).await.expect("frame") {
            ServerFrame::Pong { .. } => break,
            ServerFrame::Call { .. } => panic!("a blocked user's call reached bob"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_blocked_user_cannot_edit_react_or_add_the_blocker_to_groups() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (_, cat_user) = app.user("cat").await;
    let conv = direct(&ann, &bob_user).await;
    let sent = ann
        .send_http(conv.id, "m1", MessageKind::Text, json!({"text": "hello"}))
        .await
        .expect("send");
    bob.block(ann_user.id).await.expect("block");

    let edit = ann
        .edit_message(conv.id, sent.seq, json!({"text": "edited"}))
        .await
        .expect_err("edit after block");
    assert_eq!(edit.code(), Some(ErrorCode::Blocked));
    let react = ann
        .react(conv.id, sent.seq, "👍", true)
        .await
        .expect_err("react after block");
    assert_eq!(react.code(), Some(ErrorCode::Blocked));
    // The blocker is refused too, both ways, like a send.
    let edit_back = bob
        .react(conv.id, sent.seq, "👍", true)
        .await
        .expect_err("bob reacts");
    assert_eq!(edit_back.code(), Some(ErrorCode::Blocked));
    // The message is unchanged.
    let page = bob
        .history(conv.id, Default::default())
        .await
        .expect("history");
    let m = page
        .messages
        .iter()
        .find(|m| m.seq == sent.seq)
        .expect("message");
    assert_eq!(m.body["text"], "hello");

    // Groups: not with the blocker in them, not again and again.
    for _ in 0..2 {
        let err = ann
            .create_group("trap", &[bob_user.id, cat_user.id])
            .await
            .expect_err("group with the blocker");
        assert_eq!(err.code(), Some(ErrorCode::Blocked));
    }
    let group = ann
        .create_group("fine", &[cat_user.id])
        .await
        .expect("group without the blocker");
    let err = ann
        .add_members(group.id, &[bob_user.id])
        .await
        .expect_err("adding the blocker");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    assert_eq!(
        ann.members(group.id).await.expect("members").len(),
        2,
        "bob was not added"
    );
}

/// Opens a TCP connection to the app and writes `bytes`.
async fn tcp_with(app: &TestApp, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    tcp.write_all(bytes).await.expect("write");
    tcp
}

/// Reads until the server closes the socket; what it sent, or `None` if it
/// stayed open for `within`.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn slow_and_silent_http_clients_are_cut_off() {
    let app = spawn_app_with(|c| {
        c.http.header_timeout_s = 1;
        c.http.idle_timeout_s = 2;
        c.http.body_timeout_s = 1;
    })
    .await;
    // Slowloris: a header that never ends.
    let mut partial = tcp_with(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(
        read_until_closed(&mut partial, Duration::from_secs(15))
            .await
            .is_some(),
        "a partial header kept the connection open"
    );
    // A silent socket that never sends a byte.
    let mut silent = tcp_with(&app, b"").await;
    assert!(read_until_closed(&mut silent, Duration::from_secs(15))
        .await
        .is_some());
    // A keep-alive connection idle after its request.
    let mut idle = tcp_with(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut idle, Duration::from_secs(15))
        .await
        .expect("the idle connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body that stalls.
    let mut slow_body = tcp_with(
        &app,
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await;
    let answer = read_until_closed(&mut slow_body, Duration::from_secs(15))
        .await
        .expect("the stalled body is cut off");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
}

#[tokio::test]
async fn websocket_connections_are_capped_per_device_and_per_user() {
    let app = spawn_app_with(|c| {
        c.limits.max_connections_per_device = 2;
        c.limits.max_connections_per_user = 3;
    })
    .await;
    let (ann, _) = app.user("ann").await;
    let _a1 = raw_connect(&ann).await;
    let _a2 = raw_connect(&ann).await;
    let err = ann.connect_raw().await.expect_err("third on one device");
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    let second_device = app.device("ann").await;
    let _b1 = raw_connect(&second_device).await;
    let err = second_device
        .connect_raw()
        .await
        .expect_err("fourth for the user");
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    // Another user is not affected.
    let (bob, _) = app.user("bob").await;
    let _bob = raw_connect(&bob).await;
}

#[tokio::test]
async fn control_characters_in_search_are_a_bad_request() {
    let app = spawn_app().await;
    let token = login_token(&app.base_url, "ann").await;
    for q in ["a\u{0}b", "line\nbreak", "\u{7}"] {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/search/messages", app.base_url))
            .query(&[("q", q)])
            .bearer_auth(&token)
            .send()
            .await
            .expect("search");
        assert_eq!(resp.status(), 400, "{q:?}");
        assert_eq!(error_code(resp).await, "bad_request");
    }
}

#[tokio::test]
async fn access_tokens_are_refused_in_every_url() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let app = spawn_app().await;
    let token = login_token(&app.base_url, "ann").await;
    let me = reqwest::Client::new()
        .get(format!("{}/v1/users/me?token={token}", app.base_url))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 401);
    let header = reqwest::Client::new()
        .get(format!("{}/v1/users/me", app.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(header.status(), 200);
    // Not on the WebSocket either (issue 15): browsers offer the token as
    // a subprotocol instead, and the server answers with confab.v1.
    let err = confab_sdk::raw::connect(&format!("ws://{}/v1/ws?token={token}", app.addr), None)
        .await
        .expect_err("?token= on the upgrade");
    assert_eq!(err.status(), Some(401));
    let mut request = format!("ws://{}/v1/ws", app.addr)
        .into_client_request()
        .expect("request");
    let offered = format!("confab.v1, bearer.{token}");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&offered).expect("header"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade with the subprotocol token");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("confab.v1")
    );
    use futures_util::StreamExt;
    let first = ws.next().await.expect("a frame").expect("ok");
    assert!(first
        .to_text()
        .expect("text")
        .contains("\"type\":\"hello\""));
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_with_1009() {
    let app = spawn_app_with(|c| c.limits.max_frame_bytes = 1024).await;
    let (ann, _) = app.user("ann").await;
    let mut conn = raw_connect(&ann).await;
    // The hard cap is 4x the limit, at least 1 MiB.
    let huge = json!({"type": "ping", "nonce": "z".repeat(1024 * 1024 + 16)}).to_string();
    let _ = conn.send_text(huge).await;
    let code = conn
        .close_code_within(WAIT)
        .await
        .expect("the server closes the connection");
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn metrics_need_their_own_address_or_a_token() {
    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = spawn_app_with(|c| {
        c.http.metrics_token = Some(confab_server::config::Secret::new("s3cret"));
        c.http.metrics_listen = Some(format!("127.0.0.1:{metrics_port}").parse().expect("addr"));
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", app.base_url);
    let anonymous = http.get(&url).send().await.expect("metrics");
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("guess")
        .send()
        .await
        .expect("metrics");
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("metrics");
    assert_eq!(right.status(), 200);
    assert!(right.text().await.expect("text").contains("confab_"));
    let separate = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics address");
    assert_eq!(separate.status(), 200);

    // With neither setting, /metrics is not served.
    let closed = spawn_app().await;
    let resp = http
        .get(format!("{}/metrics", closed.base_url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 404);
    // And the token never shows in the printed configuration.
    let mut c = confab_server::Config::default();
    c.http.metrics_token = Some(confab_server::config::Secret::new("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
}
