//! Health, readiness, metrics and the server-side heartbeat.

use std::time::{Duration, Instant};

use crate::support::*;
use confab_sdk::proto::ServerFrame;
use confab_sdk::Event;

#[tokio::test]
async fn health_ready_and_metrics() {
    let app = spawn_app_with(|c| {
        c.http.metrics_token = Some(confab_server::config::Secret::new("scrape"));
    })
    .await;
    let http = app.http();
    for path in ["/healthz", "/readyz"] {
        let resp = http
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["status"], "ok");
    }
    let (ann, _) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    let conv = direct(&ann, &bob).await;
    let conn = connect(&ann).await;
    conn.send_text(conv.id, "counted").await.expect("send");
    let text = http
        .get(format!("{}/metrics", app.base_url))
        .bearer_auth("scrape")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "confab_connections",
        "confab_messages_committed_total",
        "confab_commit_batch_size_bucket",
        "confab_commit_seconds_bucket",
        "confab_frames_in_total{type=\"send\"}",
        "confab_frames_out_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_three_heartbeats() {
    let app = spawn_app_with(|c| c.heartbeat_s = 1).await;
    let (ann, ann_user) = app.user("ann").await;
    // Bob, a friend, sees ann go offline: the moment her only connection
    // is closed, so the test waits for that event instead of sleeping.
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let mut b = connect(&bob).await;
    let mut conn = ann.connect_raw().await.expect("connect");
    match conn.next_frame_within(WAIT).await.expect("hello") {
        ServerFrame::Hello { heartbeat_s, .. } => assert_eq!(heartbeat_s, 1),
        other => panic!("{other:?}"),
    }

    // A client that keeps reading (and so answers pings) stays, for longer
    // than three heartbeats; checked meanwhile, on another user's socket.
    let (cat, _) = app.user("cat").await;
    let mut live = cat.connect_raw().await.expect("connect");
    let reading = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_millis(4500);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), live.next_text()).await {
                Ok(None) | Ok(Some(Err(_))) => panic!("a reading client was disconnected"),
                _ => {}
            }
        }
    });

    // Not reading means not answering pings: the server hears nothing.
    let started = Instant::now();
    b.wait_for(WAIT, |e| {
        matches!(e, Event::Presence { user_id, status, .. } if *user_id == ann_user.id && *status == confab_sdk::PresenceStatus::Offline)
    })
    .await
    .expect("ann's silent connection is closed");
    let closed = wait_closed(&mut conn, WAIT).await;
    assert!(closed, "closed after {:?}", started.elapsed());
    reading.await.expect("the reading client stays");
}
