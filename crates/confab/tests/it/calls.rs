//! Calls: a call rings every device of the callee, one device takes it and
//! the others stop (`answered_elsewhere`), decline, a missed call after the
//! ring timeout, `busy`, refusals (not a member, blocked), the one history
//! line each call leaves, TURN credentials checked by recomputing them, and
//! a call between users on two cluster nodes.

use base64::Engine as _;
use confab_sdk::proto::{ClientFrame, ServerFrame};
use confab_sdk::{CallSignal, Client, ConversationId, ErrorCode, RawConnection, ServerEvent};
use confab_testkit::{Nats, Postgres};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::support::*;

fn signal(
    call_id: &str,
    conversation_id: ConversationId,
    to: i64,
    signal: CallSignal,
    payload: Value,
) -> ClientFrame {
    ClientFrame::Call {
        call_id: call_id.into(),
        conversation_id: Some(conversation_id),
        to_user_id: to,
        signal,
        payload,
    }
}

/// Sends one signal.
async fn send(conn: &mut RawConnection, frame: ClientFrame) {
    conn.send_frame(&frame).await.expect("send signal");
}

/// The next `call` frame on `conn` (other frames skipped): call id, sender,
/// signal, payload.
async fn next_call(conn: &mut RawConnection) -> (String, i64, CallSignal, Value) {
    loop {
        if let ServerFrame::Call {
            call_id,
            from_user_id,
            signal,
            payload,
            ..
        } = conn.next_frame_within(WAIT).await.expect("a call frame")
        {
            return (call_id, from_user_id, signal, payload);
        }
    }
}

/// Waits for the next signal of `call_id` that is not SDP or ICE (relayed
/// to every device of a user) and checks it; frames of other calls (a
/// device hears about every call of its user) are skipped.
async fn expect_signal(conn: &mut RawConnection, call_id: &str, want: CallSignal) -> Value {
    loop {
        let (id, _, got, payload) = next_call(conn).await;
        let relayed = matches!(
            got,
            CallSignal::Offer | CallSignal::Answer | CallSignal::Ice
        );
        if id != call_id || (relayed && got != want) {
            continue;
        }
        assert_eq!(got, want, "{call_id}: payload {payload}");
        return payload;
    }
}

/// Waits for the `call_ended` event of `call_id`: (outcome, duration_ms).
async fn call_ended(conn: &mut RawConnection, call_id: &str) -> (String, u64) {
    loop {
        if let ServerFrame::Event(ServerEvent::CallEnded {
            call_id: id,
            outcome,
            duration_ms,
            ..
        }) = conn.next_frame_within(WAIT).await.expect("call_ended")
        {
            if id == call_id {
                return (outcome, duration_ms);
            }
        }
    }
}

/// Nothing but what `conn` answers a ping with arrives: no call frame got
/// through before it.
async fn no_call_until_pong(conn: &mut RawConnection) {
    let ping = ClientFrame::Ping {
        nonce: Some(json!("check")),
    };
    conn.send_frame(&ping).await.expect("ping");
    loop {
        match conn.next_frame_within(WAIT).await.expect("frame") {
            ServerFrame::Pong { .. } => return,
            ServerFrame::Call { signal, .. } => panic!("unexpected call frame {signal:?}"),
            _ => {}
        }
    }
}

/// The call history lines of a conversation: (call id, outcome, duration).
async fn history_lines(client: &Client, id: ConversationId) -> Vec<(String, String, u64)> {
    all_history(client, id)
        .await
        .into_iter()
        .filter(|m| m.body["event"] == "call_ended")
        .map(|m| {
            let b = &m.body;
            (
                b["call_id"].as_str().unwrap_or_default().to_owned(),
                b["outcome"].as_str().unwrap_or_default().to_owned(),
                b["duration_ms"].as_u64().expect("duration_ms"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_call_rings_every_device_and_leaves_one_history_line() {
    let app = spawn_app_with(|c| c.chat.call_ring_timeout_s = 1).await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let bob_phone = app.device("bob").await;
    let ann_id = ann.session().expect("session").user.id;
    let conv = direct(&ann, &bob_user).await.id;
    let mut a = raw_connect(&ann).await;
    let mut b1 = raw_connect(&bob).await;
    let mut b2 = raw_connect(&bob_phone).await;

    // Both of bob's devices ring; one takes it, the other stops.
    send(
        &mut a,
        signal(
            "c1",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "video"}),
        ),
    )
    .await;
    for b in [&mut b1, &mut b2] {
        let (id, from, sig, payload) = next_call(b).await;
        assert_eq!((id.as_str(), from, sig), ("c1", ann_id, CallSignal::Invite));
        assert_eq!(payload["media"], "video");
    }
    send(
        &mut b1,
        signal("c1", conv, ann_id, CallSignal::Ringing, Value::Null),
    )
    .await;
    expect_signal(&mut a, "c1", CallSignal::Ringing).await;
    send(
        &mut b2,
        signal("c1", conv, ann_id, CallSignal::Accept, Value::Null),
    )
    .await;
    let why = expect_signal(&mut b1, "c1", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "answered_elsewhere");
    expect_signal(&mut a, "c1", CallSignal::Accept).await;
    // SDP and candidates are relayed as they are.
    send(
        &mut a,
        signal(
            "c1",
            conv,
            bob_user.id,
            CallSignal::Offer,
            json!({"sdp": "v=0"}),
        ),
    )
    .await;
    assert_eq!(
        expect_signal(&mut b2, "c1", CallSignal::Offer).await["sdp"],
        "v=0"
    );
    send(
        &mut b2,
        signal("c1", conv, ann_id, CallSignal::Hangup, Value::Null),
    )
    .await;
    expect_signal(&mut a, "c1", CallSignal::Hangup).await;
    let (outcome, _) = call_ended(&mut a, "c1").await;
    assert_eq!(outcome, "answered");

    // Declined: the device that did not decline stops ringing.
    send(
        &mut a,
        signal(
            "c2",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b2, "c2", CallSignal::Invite).await;
    expect_signal(&mut b1, "c2", CallSignal::Invite).await;
    send(
        &mut b1,
        signal("c2", conv, ann_id, CallSignal::Decline, Value::Null),
    )
    .await;
    expect_signal(&mut a, "c2", CallSignal::Decline).await;
    let why = expect_signal(&mut b2, "c2", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "declined");
    assert_eq!(call_ended(&mut a, "c2").await, ("declined".to_owned(), 0));

    // Missed: nobody answers within the (1 s) ring timeout.
    send(
        &mut a,
        signal(
            "c3",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b1, "c3", CallSignal::Invite).await;
    let why = expect_signal(&mut b1, "c3", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "timeout");
    let why = expect_signal(&mut a, "c3", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "timeout");
    assert_eq!(call_ended(&mut a, "c3").await, ("missed".to_owned(), 0));

    // Cancelled by the caller before anyone answered: missed too.
    send(
        &mut a,
        signal(
            "c4",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b2, "c4", CallSignal::Invite).await;
    send(
        &mut a,
        signal(
            "c4",
            conv,
            bob_user.id,
            CallSignal::Cancel,
            json!({"reason": "cancelled"}),
        ),
    )
    .await;
    expect_signal(&mut b2, "c4", CallSignal::Cancel).await;
    assert_eq!(call_ended(&mut a, "c4").await.0, "missed");

    // One line per call, in the conversation's history, for every device.
    let lines = history_lines(&bob_phone, conv).await;
    let outcomes: Vec<(&str, &str)> = lines
        .iter()
        .map(|(id, o, _)| (id.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("c1", "answered"),
            ("c2", "declined"),
            ("c3", "missed"),
            ("c4", "missed")
        ]
    );
}

#[tokio::test]
async fn a_user_in_a_call_is_busy_and_strangers_or_blocked_users_cannot_ring() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (carl, _) = app.user("carl").await;
    let (eve, _) = app.user("eve").await;
    let ann_bob = direct(&ann, &bob_user).await.id;
    let carl_bob = direct(&carl, &bob_user).await.id;
    let mut a = raw_connect(&ann).await;
    let mut b = raw_connect(&bob).await;
    let mut c = raw_connect(&carl).await;
    let mut e = raw_connect(&eve).await;

    send(
        &mut a,
        signal(
            "x1",
            ann_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b, "x1", CallSignal::Invite).await;
    send(
        &mut b,
        signal("x1", ann_bob, ann_user.id, CallSignal::Accept, Value::Null),
    )
    .await;
    expect_signal(&mut a, "x1", CallSignal::Accept).await;

    // bob is in a call: carl's invite is answered busy and never rings.
    send(
        &mut c,
        signal(
            "y1",
            carl_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "video"}),
        ),
    )
    .await;
    let (id, from, sig, _) = next_call(&mut c).await;
    assert_eq!(
        (id.as_str(), from, sig),
        ("y1", bob_user.id, CallSignal::Busy)
    );
    assert_eq!(call_ended(&mut c, "y1").await.0, "busy");
    no_call_until_pong(&mut b).await;

    // After the hang-up bob can be rung again.
    send(
        &mut a,
        signal("x1", ann_bob, bob_user.id, CallSignal::Hangup, Value::Null),
    )
    .await;
    expect_signal(&mut b, "x1", CallSignal::Hangup).await;
    call_ended(&mut a, "x1").await;
    send(
        &mut c,
        signal(
            "y2",
            carl_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "video"}),
        ),
    )
    .await;
    expect_signal(&mut b, "y2", CallSignal::Invite).await;

    // Not a member of the conversation: refused, nothing rings.
    send(
        &mut e,
        signal(
            "z1",
            ann_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    assert_eq!(expect_error(&mut e).await.0, ErrorCode::Forbidden);
    // A member calling someone outside the conversation: refused too.
    send(
        &mut c,
        signal(
            "z2",
            carl_bob,
            ann_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    assert_eq!(expect_error(&mut c).await.0, ErrorCode::Forbidden);
    // An invite must name its conversation and media.
    let bare = ClientFrame::Call {
        call_id: "z3".into(),
        conversation_id: None,
        to_user_id: bob_user.id,
        signal: CallSignal::Invite,
        payload: json!({"media": "audio"}),
    };
    send(&mut a, bare).await;
    assert_eq!(expect_error(&mut a).await.0, ErrorCode::BadRequest);
    send(
        &mut a,
        signal("z4", ann_bob, bob_user.id, CallSignal::Invite, json!({})),
    )
    .await;
    assert_eq!(expect_error(&mut a).await.0, ErrorCode::BadRequest);

    // Blocked: ann cannot ring bob, nor bob ann.
    bob.block(ann_user.id).await.expect("block");
    send(
        &mut a,
        signal(
            "z5",
            ann_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    assert_eq!(expect_error(&mut a).await.0, ErrorCode::Blocked);
    no_call_until_pong(&mut b).await;
}

#[tokio::test]
async fn a_closed_connection_ends_its_calls() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let ann_id = ann.session().expect("session").user.id;
    let conv = direct(&ann, &bob_user).await.id;
    let mut b = raw_connect(&bob).await;

    // The caller's tab closes while ringing: the callee stops ringing and
    // the call is missed.
    let mut a = raw_connect(&ann).await;
    send(
        &mut a,
        signal(
            "t1",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b, "t1", CallSignal::Invite).await;
    a.close().await.expect("close");
    let why = expect_signal(&mut b, "t1", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "cancelled");
    assert_eq!(call_ended(&mut b, "t1").await.0, "missed");

    // The callee's tab closes during the call: the caller gets hangup and
    // the call ends answered.
    let mut a = raw_connect(&ann).await;
    send(
        &mut a,
        signal(
            "t2",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b, "t2", CallSignal::Invite).await;
    send(
        &mut b,
        signal("t2", conv, ann_id, CallSignal::Accept, Value::Null),
    )
    .await;
    expect_signal(&mut a, "t2", CallSignal::Accept).await;
    b.close().await.expect("close");
    expect_signal(&mut a, "t2", CallSignal::Hangup).await;
    assert_eq!(call_ended(&mut a, "t2").await.0, "answered");
    // bob is not left "in a call": he can be rung again.
    let mut b = raw_connect(&bob).await;
    send(
        &mut a,
        signal(
            "t3",
            conv,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut b, "t3", CallSignal::Invite).await;
}

#[tokio::test]
async fn ice_servers_carry_coturn_shared_secret_credentials() {
    let app = spawn_app_with(|c| {
        c.calls.turn_urls = vec![
            "stun:127.0.0.1:3478".into(),
            "turn:127.0.0.1:3478?transport=udp".into(),
        ];
        c.calls.turn_secret = Some(confab_server::config::Secret::new("s3cret"));
        c.calls.turn_ttl_s = 600;
    })
    .await;
    let (ann, ann_user) = app.user("ann").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let got = ann.ice_servers().await.expect("ice servers");
    assert_eq!(got.ttl_s, 600);
    let stun = &got.ice_servers[0];
    assert_eq!(stun.urls, ["stun:127.0.0.1:3478"]);
    assert!(stun.username.is_none() && stun.credential.is_none());
    let turn = &got.ice_servers[1];
    assert_eq!(turn.urls, ["turn:127.0.0.1:3478?transport=udp"]);
    let username = turn.username.as_deref().expect("username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, ann_user.id.to_string());
    let expiry: u64 = expiry.parse().expect("unix time");
    assert!(
        expiry >= before + 600,
        "expires {expiry}, asked at {before}"
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").expect("key");
    mac.update(username.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(turn.credential.as_deref(), Some(want.as_str()));

    // Signed-in users only.
    let anonymous = app
        .http()
        .get(format!("{}/v1/calls/ice-servers", app.base_url))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
}

/// Logs `name` (already registered) in on the node at `url`.
async fn login_on(url: &str, name: &str) -> Client {
    let client = Client::new(url);
    client
        .login(name, PASSWORD, Some("calls test"))
        .await
        .expect("login");
    client
}

#[tokio::test]
async fn calls_ring_and_connect_across_cluster_nodes() {
    let pg = Postgres::start().await.expect("private postgres");
    let nats = Nats::start().await.expect("private nats-server");
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = spawn_binary_with(
            dir.path(),
            &[
                "--database",
                &pg.url(),
                "--bus",
                &nats.url(),
                "--node-id",
                &format!("call-node-{i}"),
                "--call-ring-timeout-s",
                "2",
            ],
        )
        .await;
        nodes.push(node);
        dirs.push(dir);
    }
    let (n0, n1) = (nodes[0].base_url.clone(), nodes[1].base_url.clone());
    for name in ["ann", "bob", "carl"] {
        Client::new(&n0)
            .register(name, PASSWORD, None)
            .await
            .expect("register");
    }
    // ann and carl on node 0; bob's laptop on node 1, his phone on node 0.
    let ann = login_on(&n0, "ann").await;
    let carl = login_on(&n0, "carl").await;
    let bob_laptop = login_on(&n1, "bob").await;
    let bob_phone = login_on(&n0, "bob").await;
    let bob_user = bob_laptop.session().expect("session").user;
    let ann_id = ann.session().expect("session").user.id;
    let ann_bob = direct(&ann, &bob_user).await.id;
    let carl_bob = direct(&carl, &bob_user).await.id;
    let mut a = raw_connect(&ann).await;
    let mut c = raw_connect(&carl).await;
    let mut laptop = raw_connect(&bob_laptop).await;
    let mut phone = raw_connect(&bob_phone).await;
    // Each connection's interest is live on the bus once its hello came.
    send(
        &mut a,
        signal(
            "k1",
            ann_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "video"}),
        ),
    )
    .await;
    expect_signal(&mut laptop, "k1", CallSignal::Invite).await;
    expect_signal(&mut phone, "k1", CallSignal::Invite).await;
    send(
        &mut laptop,
        signal("k1", ann_bob, ann_id, CallSignal::Accept, Value::Null),
    )
    .await;
    let why = expect_signal(&mut phone, "k1", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "answered_elsewhere");
    expect_signal(&mut a, "k1", CallSignal::Accept).await;
    send(
        &mut a,
        signal(
            "k1",
            ann_bob,
            bob_user.id,
            CallSignal::Offer,
            json!({"sdp": "v=0"}),
        ),
    )
    .await;
    expect_signal(&mut laptop, "k1", CallSignal::Offer).await;
    send(
        &mut laptop,
        signal(
            "k1",
            ann_bob,
            ann_id,
            CallSignal::Answer,
            json!({"sdp": "v=0"}),
        ),
    )
    .await;
    expect_signal(&mut a, "k1", CallSignal::Answer).await;

    // carl (node 0) rings bob, who is in a call on node 1: node 1 answers
    // busy; the phone on node 0, which rang, is told to stop.
    send(
        &mut c,
        signal(
            "k2",
            carl_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut c, "k2", CallSignal::Busy).await;
    assert_eq!(call_ended(&mut c, "k2").await.0, "busy");

    // The call ends from node 1; node 0 (the caller's) writes the line.
    send(
        &mut laptop,
        signal("k1", ann_bob, ann_id, CallSignal::Hangup, Value::Null),
    )
    .await;
    expect_signal(&mut a, "k1", CallSignal::Hangup).await;
    assert_eq!(call_ended(&mut a, "k1").await.0, "answered");

    // Missed across nodes: nobody answers within 2 s.
    send(
        &mut a,
        signal(
            "k3",
            ann_bob,
            bob_user.id,
            CallSignal::Invite,
            json!({"media": "audio"}),
        ),
    )
    .await;
    expect_signal(&mut laptop, "k3", CallSignal::Invite).await;
    let why = expect_signal(&mut laptop, "k3", CallSignal::Cancel).await;
    assert_eq!(why["reason"], "timeout");
    assert_eq!(call_ended(&mut a, "k3").await.0, "missed");

    let lines = history_lines(&bob_laptop, ann_bob).await;
    let outcomes: Vec<&str> = lines.iter().map(|(_, o, _)| o.as_str()).collect();
    assert_eq!(outcomes, ["answered", "missed"]);
}
