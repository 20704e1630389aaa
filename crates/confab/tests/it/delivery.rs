//! Direct chat and the delivery guarantees: durable acks, gapless per
//! conversation order, idempotent resends, offline delivery through sync,
//! every device of every member, exactly once and in order.

use std::collections::HashSet;

use crate::support::*;
use confab_sdk::{ConnectOptions, Event, HistoryQuery, MessageKind, ReceiptKind};
use serde_json::json;

/// Waits for a receipt of `kind` (and `seq`, if given), skipping other events.
async fn wait_receipt(
    conn: &mut confab_sdk::Connection,
    kind: ReceiptKind,
    seq: Option<i64>,
    what: &str,
) -> Event {
    conn.wait_for(WAIT, |e| {
        matches!(e, Event::Receipt { kind: k, seq: s, .. } if *k == kind && seq.is_none_or(|want| *s == want))
    })
    .await
    .expect(what)
}

#[tokio::test]
async fn two_users_chat_both_ways() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    assert_eq!(
        direct(&bob, &ann_user).await.id,
        conv.id,
        "one direct conversation per pair"
    );
    let mut a = connect(&ann).await;
    let mut b = connect(&bob).await;

    let ack = a.send_text(conv.id, "hi bob").await.expect("send");
    assert_eq!(ack.seq, 1);
    let got = b.next_message(WAIT).await.expect("bob receives");
    assert_eq!(
        (got.seq, got.sender_id, text(&got)),
        (1, ann_user.id, "hi bob")
    );
    assert_eq!(got.client_msg_id, ack.client_msg_id);
    let own = a
        .next_message(WAIT)
        .await
        .expect("ann's stream has her own message");
    assert_eq!((own.seq, text(&own)), (1, "hi bob"));

    let ack = b.send_text(conv.id, "hi ann").await.expect("reply");
    assert_eq!(ack.seq, 2);
    let got = a.next_message(WAIT).await.expect("ann receives");
    assert_eq!(
        (got.seq, got.sender_id, text(&got)),
        (2, bob_user.id, "hi ann")
    );

    let page = ann
        .history(conv.id, HistoryQuery::default())
        .await
        .expect("history");
    let seen: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.seq, text(m).to_owned()))
        .collect();
    assert_eq!(seen, vec![(1, "hi bob".into()), (2, "hi ann".into())]);
}

#[tokio::test]
async fn offline_messages_arrive_by_sync_in_order() {
    let app = spawn_app_with(|c| c.limits.sync_batch = 4).await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let a = connect(&ann).await;
    for i in 1..=10 {
        a.send_text(conv.id, &format!("m{i}")).await.expect("send");
    }
    // Bob was offline: sync pages through them (4 at a time) in order.
    let mut b = bob.connect(ConnectOptions::default()).expect("connect");
    let got = b.next_messages(10, WAIT).await.expect("all ten");
    let texts: Vec<_> = got.iter().map(|m| text(m).to_owned()).collect();
    assert_eq!(texts, (1..=10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    b.wait_synced(WAIT).await.expect("sync completes");

    // Reconnecting with saved cursors delivers nothing again.
    let cursors = b.cursors();
    assert_eq!(cursors.get(&conv.id), Some(&10));
    b.close().await;
    let mut b2 = bob
        .connect(ConnectOptions {
            cursors,
            ..Default::default()
        })
        .expect("connect");
    b2.wait_synced(WAIT).await.expect("synced");
    a.send_text(conv.id, "m11").await.expect("send");
    let next = b2.next_message(WAIT).await.expect("live");
    assert_eq!(
        (next.seq, text(&next)),
        (11, "m11"),
        "no repeats of 1-10 before it"
    );
}

#[tokio::test]
async fn resending_a_client_msg_id_never_duplicates() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let a = connect(&ann).await;
    let mut b = connect(&bob).await;
    let body = json!({"text": "once"});
    let first = a
        .send_with_id("dup-1", conv.id, MessageKind::Text, body.clone())
        .await
        .expect("send");
    let again = a
        .send_with_id("dup-1", conv.id, MessageKind::Text, body.clone())
        .await
        .expect("resend");
    assert_eq!(first.seq, again.seq);
    let over_http = ann
        .send_http(conv.id, "dup-1", MessageKind::Text, body.clone())
        .await
        .expect("http resend");
    assert_eq!(over_http.seq, first.seq);
    let next = a.send_text(conv.id, "after").await.expect("send");
    assert_eq!(next.seq, first.seq + 1, "no seq was burnt by the resends");

    let got = b.next_messages(2, WAIT).await.expect("bob");
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        vec!["once", "after"]
    );
    let page = bob
        .history(conv.id, HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(page.messages.len(), 2);
}

#[tokio::test]
async fn concurrent_senders_get_gapless_seqs_in_the_same_order_on_every_device() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let ann2 = app.device("ann").await;
    let bob2 = app.device("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let mut devices = Vec::new();
    for c in [&ann, &bob, &ann2, &bob2] {
        devices.push(connect(c).await);
    }
    let per_sender = 100;
    let mut pending = Vec::new();
    for i in 0..per_sender {
        for (who, dev) in [("a", &devices[0]), ("b", &devices[1])] {
            let p = dev
                .send_nowait(
                    conv.id,
                    MessageKind::Text,
                    json!({"text": format!("{who}{i}")}),
                )
                .await
                .expect("queue");
            pending.push(p);
        }
    }
    let mut acked = Vec::new();
    for p in pending {
        acked.push(p.await.expect("ack").seq);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=2 * per_sender as i64).collect::<Vec<_>>(),
        "gapless, none twice"
    );

    let mut orders = Vec::new();
    for dev in devices.iter_mut() {
        let got = dev
            .next_messages(2 * per_sender, WAIT)
            .await
            .expect("every message on every device");
        let seqs: Vec<_> = got.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=2 * per_sender as i64).collect::<Vec<_>>());
        orders.push(got.iter().map(|m| text(m).to_owned()).collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "same order everywhere"
    );
    let unique: HashSet<_> = orders[0].iter().collect();
    assert_eq!(unique.len(), 2 * per_sender);
    // Each sender's messages keep the order they were sent in.
    for who in ["a", "b"] {
        let mine: Vec<_> = orders[0]
            .iter()
            .filter(|t| t.starts_with(who))
            .cloned()
            .collect();
        assert_eq!(
            mine,
            (0..per_sender)
                .map(|i| format!("{who}{i}"))
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_burst_of_acks_larger_than_one_read_batch_loses_none() {
    // Regression: the SDK handles at most 256 frames per read batch and
    // once dropped the frame it had read past the end of a full batch.
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (_, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let a = connect(&ann).await;
    let mut pending = Vec::new();
    for i in 0..1000 {
        let body = json!({"text": format!("burst {i}")});
        pending.push(
            a.send_nowait(conv.id, MessageKind::Text, body)
                .await
                .expect("queue"),
        );
    }
    for (i, p) in pending.into_iter().enumerate() {
        let ack = tokio::time::timeout(WAIT, p)
            .await
            .expect("ack in time")
            .expect("ack");
        assert_eq!(ack.seq, i as i64 + 1);
    }
    assert_eq!(a.outbox_len(), 0);
}

#[tokio::test]
async fn the_outbox_resends_after_the_connection_drops() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let a = connect(&ann).await;
    let mut b = connect(&bob).await;
    let mut pending = Vec::new();
    for round in 0..5 {
        a.kill_transport().await.expect("kill");
        for i in 0..10 {
            let body = json!({"text": format!("r{round}-{i}")});
            pending.push(
                a.send_nowait(conv.id, MessageKind::Text, body)
                    .await
                    .expect("queue"),
            );
        }
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("acked after reconnect").seq);
    }
    assert_eq!(
        seqs,
        (1..=50).collect::<Vec<_>>(),
        "acked once each, in send order"
    );
    let got = b.next_messages(50, WAIT).await.expect("bob gets all");
    let texts: Vec<_> = got.iter().map(|m| text(m).to_owned()).collect();
    let want: Vec<_> = (0..5)
        .flat_map(|r| (0..10).map(move |i| format!("r{r}-{i}")))
        .collect();
    assert_eq!(texts, want);
    assert_eq!(a.outbox_len(), 0);
}

#[tokio::test]
async fn receipts_unread_counts_and_cross_device_read() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let bob_phone = app.device("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let mut a = connect(&ann).await;
    for i in 0..3 {
        a.send_text(conv.id, &format!("m{i}")).await.expect("send");
    }
    let listed = bob.conversations().await.expect("list");
    let c = listed.iter().find(|c| c.id == conv.id).expect("listed");
    assert_eq!(c.unread_count, 3);
    assert_eq!(c.last_message.as_ref().map(|m| m.seq), Some(3));
    assert_eq!(
        ann.conversation(conv.id).await.expect("own").unread_count,
        0,
        "own messages are not unread"
    );

    // Bob's device syncs and (automatically) reports delivery.
    let b = connect(&bob).await;
    let delivered = wait_receipt(
        &mut a,
        ReceiptKind::Delivered,
        Some(3),
        "ann sees delivered",
    )
    .await;
    assert!(matches!(delivered, Event::Receipt { user_id, .. } if user_id == bob_user.id));

    let mut phone = connect(&bob_phone).await;
    b.read(conv.id, 2).await.expect("read");
    let read = wait_receipt(&mut a, ReceiptKind::Read, None, "ann sees read").await;
    assert!(matches!(read, Event::Receipt { seq: 2, .. }));
    wait_receipt(
        &mut phone,
        ReceiptKind::Read,
        Some(2),
        "bob's other device hears of his read cursor",
    )
    .await;
    assert_eq!(
        bob.conversation(conv.id).await.expect("conv").unread_count,
        1
    );
    bob.mark_read(conv.id, 3).await.expect("read over http");
    assert_eq!(
        bob_phone
            .conversation(conv.id)
            .await
            .expect("conv")
            .unread_count,
        0
    );
}

#[tokio::test]
async fn history_pages_back_and_forth() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (_, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    for i in 1..=30 {
        ann.send_http(
            conv.id,
            &format!("h{i}"),
            MessageKind::Text,
            json!({"text": format!("t{i}")}),
        )
        .await
        .expect("send");
    }
    let latest = ann
        .history(
            conv.id,
            HistoryQuery {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(latest.messages.first().map(|m| m.seq), Some(21));
    assert!(latest.has_more);
    let older = ann
        .history(conv.id, HistoryQuery::before(21, 15))
        .await
        .expect("older");
    assert_eq!(
        older.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (6..=20).collect::<Vec<_>>()
    );
    let newer = ann
        .history(conv.id, HistoryQuery::after(25, 50))
        .await
        .expect("newer");
    assert_eq!(
        newer.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (26..=30).collect::<Vec<_>>()
    );
    assert!(!newer.has_more);
}
