//! The reconnecting connection against a scripted fake server: ordering,
//! sync paging, gap filling, the outbox across reconnects, refusals, 401
//! refresh, idle timeout, failover and close.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use confab_proto::{ClientFrame, ErrorCode, MessageKind, MessageRecord, ServerFrame};
use confab_sdk::{BackoffConfig, ConnectOptions, Connection, Error, Event};
use serde_json::json;
use support::{FakeServer, WAIT};

fn record(conv: i64, seq: i64) -> MessageRecord {
    MessageRecord {
        conversation_id: conv,
        seq,
        sender_id: 3,
        client_msg_id: format!("c{conv}-{seq}"),
        kind: MessageKind::Text,
        body: json!({ "text": format!("m{seq}") }),
        ts: seq,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    }
}

fn msg(conv: i64, seq: i64) -> ServerFrame {
    ServerFrame::Message(record(conv, seq))
}

fn done(has_more: &[(i64, bool)]) -> ServerFrame {
    ServerFrame::SyncDone {
        has_more: has_more.iter().copied().collect(),
        floors: Default::default(),
    }
}

fn fast() -> ConnectOptions {
    ConnectOptions {
        backoff: BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        ..ConnectOptions::default()
    }
}

async fn seqs(conn: &mut Connection, n: usize) -> Vec<i64> {
    let msgs = conn.next_messages(n, WAIT).await.expect("messages");
    msgs.iter().map(|m| m.seq).collect()
}

fn cursors_of(frame: &ClientFrame) -> HashMap<i64, i64> {
    match frame {
        ClientFrame::Sync { cursors } => cursors.clone(),
        other => panic!("expected sync, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_orders_overtaking_live_messages_and_completes_sync() {
    let mut server = FakeServer::start().await;
    let opts = ConnectOptions {
        cursors: HashMap::from([(9, 4)]),
        ..fast()
    };
    let mut conn = server.client().connect(opts).expect("connect");
    let (mut sc, sync) = server.accept_synced().await;
    assert_eq!(cursors_of(&sync), HashMap::from([(9, 4)]));

    let ev = conn.next_event_within(WAIT).await.expect("event");
    assert_eq!(
        ev,
        Event::Connected {
            user_id: 1,
            device_id: 2
        }
    );

    // Live 3 overtakes sync results 1, 2; 9/4 is at or below the cursor.
    for f in [
        msg(7, 3),
        msg(7, 1),
        msg(9, 4),
        msg(7, 2),
        msg(7, 3),
        msg(9, 5),
    ] {
        sc.send(f).await;
    }
    sc.send(done(&[(7, false), (9, false)])).await;
    let mut got = Vec::new();
    loop {
        match conn.next_event_within(WAIT).await.expect("event") {
            Event::Message(m) => got.push((m.conversation_id, m.seq)),
            Event::SyncComplete => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, [(7, 1), (7, 2), (7, 3), (9, 5)]);
    assert_eq!(conn.cursors(), HashMap::from([(7, 3), (9, 5)]));

    // Delivered cursors reach the server; the last ones are the highest.
    let mut delivered = HashMap::new();
    while let Some(f) = sc.try_recv(Duration::from_millis(200)).await {
        match f {
            ClientFrame::Delivered {
                conversation_id,
                seq,
            } => {
                delivered.insert(conversation_id, seq);
            }
            other => panic!("no other frame expected, got {other:?}"),
        }
    }
    assert_eq!(delivered, HashMap::from([(7, 3), (9, 5)]));
    conn.close().await;
}

#[tokio::test]
async fn has_more_pages_until_done_then_sync_complete() {
    let mut server = FakeServer::start().await;
    let mut conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    for s in 1..=3 {
        sc.send(msg(7, s)).await;
    }
    sc.send(done(&[(7, true)])).await;
    let next = sc.recv_skipping_delivered().await;
    assert_eq!(cursors_of(&next), HashMap::from([(7, 3)]));
    sc.send(msg(7, 4)).await;
    sc.send(done(&[(7, false)])).await;
    conn.wait_connected(WAIT).await.expect("connected");
    assert_eq!(seqs(&mut conn, 4).await, [1, 2, 3, 4]);
    conn.wait_synced(WAIT).await.expect("synced");
}

#[tokio::test]
async fn a_gap_after_sync_asks_for_one_sync_and_fills_it() {
    let mut server = FakeServer::start().await;
    let mut conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    sc.send(msg(7, 1)).await;
    sc.send(done(&[(7, false)])).await;
    conn.wait_synced(WAIT).await.expect("synced");

    sc.send(msg(7, 4)).await;
    sc.send(msg(7, 5)).await;
    let gap_sync = sc.recv_skipping_delivered().await;
    assert_eq!(cursors_of(&gap_sync), HashMap::from([(7, 1)]));
    // Only one gap sync while it is outstanding.
    sc.send(msg(7, 6)).await;
    for s in 2..=5 {
        sc.send(msg(7, s)).await;
    }
    sc.send(done(&[(7, false)])).await;
    // (wait_synced skipped the event of seq 1.)
    assert_eq!(seqs(&mut conn, 5).await, [2, 3, 4, 5, 6]);
    while let Some(f) = sc.try_recv(Duration::from_millis(200)).await {
        assert!(matches!(f, ClientFrame::Delivered { .. }), "{f:?}");
    }
}

#[tokio::test]
async fn outbox_survives_reconnects_and_acks_resolve_sends() {
    let mut server = FakeServer::start().await;
    let mut conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    sc.send(done(&[])).await;
    conn.wait_synced(WAIT).await.expect("synced");

    let a = conn
        .send_nowait(7, MessageKind::Text, json!({"text": "a"}))
        .await
        .expect("queue a");
    let b = conn
        .send_nowait(7, MessageKind::Text, json!({"text": "b"}))
        .await
        .expect("queue b");
    let first: Vec<_> = [sc.recv().await, sc.recv().await].into();
    assert_eq!(conn.outbox_len(), 2);

    // The server acks only b, then the link dies.
    sc.send(ServerFrame::Ack {
        client_msg_id: b.client_msg_id().to_owned(),
        conversation_id: 7,
        seq: 2,
        ts: 5,
    })
    .await;
    let b_ack = b.await.expect("b acked");
    assert_eq!(b_ack.seq, 2);
    conn.kill_transport().await.expect("kill");
    conn.wait_for(WAIT, |e| matches!(e, Event::Disconnected { .. }))
        .await
        .expect("disconnected");

    let (mut sc, _) = server.accept_synced().await;
    let resent = sc.recv().await;
    assert_eq!(resent, first[0], "a is resent with the same client_msg_id");
    sc.send(ServerFrame::Ack {
        client_msg_id: a.client_msg_id().to_owned(),
        conversation_id: 7,
        seq: 1,
        ts: 4,
    })
    .await;
    assert_eq!(a.await.expect("a acked").seq, 1);
    assert_eq!(conn.outbox_len(), 0);
}

#[tokio::test]
async fn retryable_refusals_are_retried_and_others_fail_the_send() {
    let mut server = FakeServer::start().await;
    let conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    sc.send(done(&[])).await;

    let pending = conn
        .send_nowait_with_id("id-1", 7, MessageKind::Text, json!({"text": "x"}))
        .await
        .expect("queue");
    assert!(matches!(sc.recv().await, ClientFrame::Send { .. }));
    sc.send(ServerFrame::Error {
        client_msg_id: Some("id-1".into()),
        code: ErrorCode::RateLimited,
        message: "slow down".into(),
    })
    .await;
    let again = sc.recv().await;
    assert!(matches!(&again, ClientFrame::Send { client_msg_id, .. } if client_msg_id == "id-1"));
    sc.send(ServerFrame::Error {
        client_msg_id: Some("id-1".into()),
        code: ErrorCode::NotFound,
        message: "no such conversation".into(),
    })
    .await;
    let err = pending.await.expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert_eq!(conn.outbox_len(), 0);

    let bad = conn
        .send_with_id("not valid!", 7, MessageKind::Text, json!({}))
        .await;
    assert_eq!(
        bad.expect_err("invalid id").code(),
        Some(ErrorCode::BadRequest)
    );
}

#[tokio::test]
async fn garbage_and_stray_errors_do_not_break_the_connection() {
    let mut server = FakeServer::start().await;
    let mut conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    sc.send_text("this is not json").await;
    sc.send_text(r#"{"type":"from_the_future","x":1}"#).await;
    sc.send(ServerFrame::Error {
        client_msg_id: None,
        code: ErrorCode::BadFrame,
        message: "what".into(),
    })
    .await;
    sc.send(msg(7, 1)).await;
    sc.send(done(&[(7, false)])).await;
    let err = conn
        .wait_for(WAIT, |e| matches!(e, Event::Error(_)))
        .await
        .expect("error event");
    assert!(matches!(err, Event::Error(e) if e.code == ErrorCode::BadFrame));
    assert_eq!(conn.next_message(WAIT).await.expect("message").seq, 1);
}

#[tokio::test]
async fn a_401_upgrade_refreshes_the_session_and_reconnects() {
    let mut server = FakeServer::start().await;
    server
        .script
        .reject_upgrades
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let client = server.client();
    let mut conn = client.connect(fast()).expect("connect");
    let (_sc, _) = server.accept_synced().await;
    conn.wait_connected(WAIT).await.expect("connected");
    let tokens = server.script.upgrade_tokens.lock().expect("lock").clone();
    assert_eq!(tokens, ["Bearer access-1"]);
    assert_eq!(
        client.session().expect("session").refresh_token,
        "refresh-1"
    );
}

#[tokio::test]
async fn http_calls_refresh_once_on_unauthorized() {
    let server = FakeServer::start().await;
    let client = server.client();
    *server.script.valid_token.lock().expect("lock") = "something-else".into();
    let me = client.me().await.expect("me after refresh");
    assert_eq!(me.id, 1);
    assert_eq!(
        server
            .script
            .refreshes
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(client.session().expect("session").access_token, "access-1");
}

#[tokio::test]
async fn silence_past_the_idle_timeout_reconnects() {
    let mut server = FakeServer::start().await;
    let opts = ConnectOptions {
        idle_timeout: Some(Duration::from_millis(200)),
        ..fast()
    };
    let mut conn = server.client().connect(opts).expect("connect");
    let (_sc, _) = server.accept_synced().await;
    conn.wait_for(WAIT, |e| matches!(e, Event::Disconnected { .. }))
        .await
        .expect("idle disconnect");
    let (_sc2, sync) = server.accept_synced().await;
    assert!(cursors_of(&sync).is_empty());
    conn.wait_connected(WAIT).await.expect("reconnected");
}

#[tokio::test]
async fn fails_over_to_the_next_url() {
    let mut server = FakeServer::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let mut session = server.client().session().expect("session");
    session.base_url.clone_from(&dead_url);
    let client = confab_sdk::Client::from_session(session);
    let opts = ConnectOptions {
        urls: vec![server.base_url.clone()],
        ..fast()
    };
    let mut conn = client.connect(opts).expect("connect");
    let (_sc, _) = server.accept_synced().await;
    conn.wait_connected(WAIT)
        .await
        .expect("connected via the second url");
}

#[tokio::test]
async fn close_sends_a_close_frame_and_fails_pending_sends() {
    let mut server = FakeServer::start().await;
    let mut conn = server.client().connect(fast()).expect("connect");
    let (mut sc, _) = server.accept_synced().await;
    let pending = conn
        .send_nowait(7, MessageKind::Text, json!({"text": "x"}))
        .await
        .expect("queue");
    assert!(matches!(sc.recv().await, ClientFrame::Send { .. }));
    conn.close().await;
    assert!(sc.closed_within(WAIT).await);
    assert_eq!(pending.await, Err(Error::Closed));
    assert!(conn.send_text(7, "late").await.is_err());
    while conn.next_event().await.is_some() {}
}

#[tokio::test]
async fn reads_and_typing_go_out_as_frames() {
    let mut server = FakeServer::start().await;
    let conn = server.client().connect(fast()).expect("connect");
    // A read asked for before the socket is up is sent after hello.
    conn.read(7, 3).await.expect("read");
    let (mut sc, _) = server.accept_synced().await;
    assert_eq!(
        sc.recv().await,
        ClientFrame::Read {
            conversation_id: 7,
            seq: 3
        }
    );
    conn.typing(7, confab_sdk::TypingState::Start)
        .await
        .expect("typing");
    assert!(matches!(
        sc.recv().await,
        ClientFrame::Typing {
            conversation_id: 7,
            ..
        }
    ));
}

#[tokio::test]
async fn raw_connection_sends_and_reads_exact_frames() {
    let mut server = FakeServer::start().await;
    let client = server.client();
    let mut raw = client.connect_raw().await.expect("raw");
    let mut sc = server.accept().await;
    raw.send_text("garbage").await.expect("send");
    sc.hello().await;
    sc.send_text("not a frame").await;
    let hello = raw.next_frame_within(WAIT).await.expect("hello");
    assert!(matches!(hello, ServerFrame::Hello { .. }));
    assert!(matches!(
        raw.next_frame().await,
        Some(Err(Error::Decode(_)))
    ));
    raw.close().await.expect("close");
}
