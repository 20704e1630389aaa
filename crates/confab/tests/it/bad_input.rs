//! Bad input gets a clear error code and the connection survives; nothing is
//! stored for a refused send.

use std::time::Duration;

use crate::support::*;
use confab_sdk::proto::{ClientFrame, ServerFrame};
use confab_sdk::{raw, ErrorCode, HistoryQuery, MessageKind, RawConnection};
use serde_json::json;

async fn still_alive(conn: &mut RawConnection) {
    conn.send_frame(&ClientFrame::Ping {
        nonce: Some(json!("alive")),
    })
    .await
    .expect("ping");
    loop {
        if let ServerFrame::Pong { nonce } = conn.next_frame_within(WAIT).await.expect("pong") {
            assert_eq!(nonce, Some(json!("alive")));
            return;
        }
    }
}

fn send_frame(id: &str, conversation_id: i64, kind: &str, body: serde_json::Value) -> String {
    json!({"type": "send", "client_msg_id": id, "conversation_id": conversation_id, "kind": kind, "body": body})
        .to_string()
}

#[tokio::test]
async fn garbage_frames_get_bad_frame_and_the_connection_stays() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let mut conn = raw_connect(&ann).await;
    let cases = [
        "not json at all",
        "{}",
        r#"{"type":"launch_missiles"}"#,
        r#"{"type":"send","conversation_id":"x"}"#,
        r#"[1,2,3]"#,
        r#"{"type":"sync","cursors":{"abc":1}}"#,
    ];
    for text in cases {
        conn.send_text(text).await.expect("send");
        assert_eq!(
            expect_error(&mut conn).await.0,
            ErrorCode::BadFrame,
            "{text}"
        );
    }
    conn.send_binary(vec![0, 1, 2, 255]).await.expect("binary");
    assert_eq!(expect_error(&mut conn).await.0, ErrorCode::BadFrame);
    // A broken send still names its client_msg_id when it can be read.
    conn.send_text(
        r#"{"type":"send","client_msg_id":"c-7","conversation_id":"x","kind":"text","body":{}}"#,
    )
    .await
    .expect("send");
    assert_eq!(
        expect_error(&mut conn).await,
        (ErrorCode::BadFrame, Some("c-7".into()))
    );
    still_alive(&mut conn).await;
}

#[tokio::test]
async fn oversized_input_gets_message_too_large_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (_, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let mut conn = raw_connect(&ann).await;

    let long_text = "x".repeat(16 * 1024 + 1);
    conn.send_text(send_frame(
        "big-text",
        conv.id,
        "text",
        json!({"text": long_text}),
    ))
    .await
    .expect("send");
    assert_eq!(
        expect_error(&mut conn).await,
        (ErrorCode::MessageTooLarge, Some("big-text".into()))
    );

    let huge_frame = send_frame(
        "big-frame",
        conv.id,
        "text",
        json!({"text": "hi", "pad": "y".repeat(70 * 1024)}),
    );
    conn.send_text(huge_frame).await.expect("send");
    assert_eq!(expect_error(&mut conn).await.0, ErrorCode::MessageTooLarge);
    still_alive(&mut conn).await;

    let page = ann
        .history(conv.id, HistoryQuery::default())
        .await
        .expect("history");
    assert!(
        page.messages.is_empty(),
        "nothing stored: {:?}",
        page.messages
    );
    let ok = ann
        .send_http(conv.id, "fine", MessageKind::Text, json!({"text": "fine"}))
        .await
        .expect("send");
    assert_eq!(ok.seq, 1, "no seq was used by refused sends");
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_only_that_connection() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let mut conn = raw_connect(&ann).await;
    conn.send_text("z".repeat(2 * 1024 * 1024)).await.ok();
    assert!(wait_closed(&mut conn, WAIT).await, "closed in time");
    let mut fresh = raw_connect(&ann).await;
    still_alive(&mut fresh).await;
}

#[tokio::test]
async fn sends_outside_your_conversations_are_refused() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (eve, _) = app.user("eve").await;
    let conv = direct(&ann, &bob_user).await;
    let mut eve_conn = raw_connect(&eve).await;
    let mut ann_conn = raw_connect(&ann).await;
    let text = json!({"text": "boo"});
    // (eve sends?, client_msg_id, conversation, kind, expected code)
    let cases = [
        (true, "sneaky", conv.id, "text", ErrorCode::NotFound),
        (true, "nowhere", 987_654, "text", ErrorCode::NotFound),
        (false, "sys", conv.id, "system", ErrorCode::Forbidden),
        (false, "with space", conv.id, "text", ErrorCode::BadRequest),
    ];
    for (from_eve, id, conversation, kind, code) in cases {
        let conn = if from_eve {
            &mut eve_conn
        } else {
            &mut ann_conn
        };
        conn.send_text(send_frame(id, conversation, kind, text.clone()))
            .await
            .expect("send");
        assert_eq!(expect_error(conn).await, (code, Some(id.into())), "{id}");
    }
    still_alive(&mut eve_conn).await;

    assert!(bob
        .history(conv.id, HistoryQuery::default())
        .await
        .expect("history")
        .messages
        .is_empty());
    let err = eve
        .history(conv.id, HistoryQuery::default())
        .await
        .expect_err("outsider history");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let err = eve
        .send_http(conv.id, "x1", MessageKind::Text, json!({"text": "boo"}))
        .await
        .expect_err("outsider http send");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn sending_too_fast_is_rate_limited_and_not_stored() {
    let app = spawn_app_with(|c| {
        c.limits.send_rate_per_s = 0.5;
        c.limits.send_burst = 3.0;
    })
    .await;
    let (ann, _) = app.user("ann").await;
    let (_, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let mut conn = raw_connect(&ann).await;
    for i in 0..5 {
        conn.send_text(send_frame(
            &format!("r{i}"),
            conv.id,
            "text",
            json!({"text": "hi"}),
        ))
        .await
        .expect("send");
    }
    let mut acks = 0;
    let mut limited = Vec::new();
    while acks + limited.len() < 5 {
        match conn.next_frame_within(WAIT).await.expect("answer") {
            ServerFrame::Ack { .. } => acks += 1,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                client_msg_id,
                ..
            } => limited.push(client_msg_id),
            _ => {}
        }
    }
    assert_eq!(acks, 3, "the burst");
    assert_eq!(limited, vec![Some("r3".into()), Some("r4".into())]);
    let page = ann
        .history(conv.id, HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(page.messages.len(), 3);
}

#[tokio::test]
async fn websocket_upgrade_needs_a_valid_token() {
    let app = spawn_app().await;
    let url = confab_sdk::ws_url(&app.base_url);
    let err = raw::connect(&url, None).await.expect_err("no token");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    let err = raw::connect(&url, Some("not-a-token"))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    // Not in the URL: `?token=` is refused.
    let (ann, _) = app.user("ann").await;
    let token = ann.session().expect("session").access_token;
    let err = raw::connect(&format!("{url}?token={token}"), None)
        .await
        .expect_err("query token");
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn a_reader_that_never_reads_is_dropped_not_buffered_forever() {
    let app = spawn_app_with(|c| {
        c.limits.outbound_queue_frames = 64;
        c.limits.outbound_queue_bytes = 64 * 1024;
    })
    .await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    // Bob connects and then never reads his socket.
    let mut stuck = raw_connect(&bob).await;
    // More than loopback's socket buffers can hide (they grow to a few MiB),
    // even compressed: letters from a xorshift generator, which deflate
    // shrinks by only about a quarter (a repeated letter would shrink to
    // nothing and the socket would never fill).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let sender = connect(&ann).await;
    for i in 0..1200 {
        let big = noise(15 * 1024);
        sender
            .send_text(conv.id, &format!("{i} {big}"))
            .await
            .expect("sends keep being acked");
    }
    // The server hung up on him at some point; he can reconnect and sync all.
    let gone = wait_closed(&mut stuck, Duration::from_secs(30)).await;
    assert!(gone, "slow consumer was disconnected");
    let mut fresh = bob
        .connect(confab_sdk::ConnectOptions::default())
        .expect("connect");
    let got = fresh
        .next_messages(1200, Duration::from_secs(60))
        .await
        .expect("everything by sync");
    assert_eq!(got.last().map(|m| m.seq), Some(1200));
}
