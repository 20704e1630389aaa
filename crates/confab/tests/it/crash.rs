//! Durability: `kill -9` of the real `confab serve` process right after acks,
//! a restart on the same data directory, and every acked message is there.

use std::collections::BTreeMap;

use crate::support::*;
use confab_sdk::{Client, ConnectOptions, HistoryQuery, MessageKind, SearchOptions};
use serde_json::json;

#[tokio::test]
async fn every_acked_message_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = spawn_binary(dir.path()).await;
    let ann = Client::new(&server.base_url);
    ann.register("ann", PASSWORD, None).await.expect("register");
    ann.login("ann", PASSWORD, None).await.expect("login");
    let bob = Client::new(&server.base_url);
    let bob_user = bob.register("bob", PASSWORD, None).await.expect("register");
    bob.login("bob", PASSWORD, None).await.expect("login");
    let conv = ann
        .direct_conversation(bob_user.id)
        .await
        .expect("conversation");

    // Four connections send concurrently; we record every ack. Each
    // connection's events are read, as an application must.
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut c = ann.connect(ConnectOptions::default()).expect("connect");
        c.wait_synced(WAIT).await.expect("synced");
        senders.push(c.handle());
        readers.push(tokio::spawn(async move {
            while c.next_event().await.is_some() {}
        }));
    }
    let mut pending = Vec::new();
    for i in 0..400 {
        let c = &senders[i % senders.len()];
        let body = json!({"text": format!("durable {i}")});
        pending.push(
            c.send_nowait(conv.id, MessageKind::Text, body)
                .await
                .expect("queue"),
        );
    }
    let mut acked: BTreeMap<i64, String> = BTreeMap::new();
    for (i, p) in pending.into_iter().enumerate() {
        let ack = tokio::time::timeout(WAIT, p)
            .await
            .expect("ack in time")
            .expect("ack");
        assert!(
            acked.insert(ack.seq, format!("durable {i}")).is_none(),
            "seq acked twice"
        );
    }
    // No graceful anything: SIGKILL right after the last ack.
    server.child.start_kill().expect("kill -9");
    server.child.wait().await.expect("reaped");
    for r in readers {
        r.abort();
    }
    drop(senders);

    let restarted = spawn_binary(dir.path()).await;
    let bob = Client::new(&restarted.base_url);
    bob.login("bob", PASSWORD, None)
        .await
        .expect("login after restart");
    let mut conn = bob.connect(ConnectOptions::default()).expect("connect");
    let got = conn
        .next_messages(acked.len(), WAIT)
        .await
        .expect("all acked messages by sync");
    let got: BTreeMap<i64, String> = got
        .into_iter()
        .map(|m| {
            (
                m.seq,
                m.body["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, acked, "every acked message, with its seq and text");
    let page = bob
        .history(
            conv.id,
            HistoryQuery {
                limit: Some(200),
                ..Default::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(page.messages.last().map(|m| m.seq), Some(400));

    // And in search: the index is written after the ack, from a queue
    // that survives the kill, so the restarted server catches up.
    let mut found = std::collections::BTreeSet::new();
    let mut cursor = None;
    loop {
        let opts = SearchOptions {
            limit: Some(50),
            cursor,
            ..Default::default()
        };
        let page = bob.search_messages("durable", &opts).await.expect("search");
        found.extend(page.hits.iter().map(|h| h.message.seq));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        found,
        acked.keys().copied().collect(),
        "every acked message in search after the restart"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = spawn_binary(dir.path()).await;
    let ann = Client::new(&server.base_url);
    ann.register("ann", PASSWORD, None).await.expect("register");
    ann.login("ann", PASSWORD, None).await.expect("login");
    let mut conn = ann.connect(ConnectOptions::default()).expect("connect");
    conn.wait_synced(WAIT).await.expect("synced");
    server.sigterm();
    let exit = tokio::time::timeout(WAIT, server.child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
    let ev = conn
        .wait_for(WAIT, |e| {
            matches!(e, confab_sdk::Event::Disconnected { .. })
        })
        .await
        .expect("client told");
    drop(ev);
}
