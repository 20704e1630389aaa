//! Message features end to end, with the real server and the SDK: edits,
//! deletion for everyone, replies and reactions, each visible live (an
//! `event` frame and a `system` notice), in history and in a fresh sync;
//! who may delete; full-text search with its access rules and the
//! `around_seq` jump to a hit.

use crate::support::*;
use confab_sdk::{
    ConnectOptions, ConversationId, ErrorCode, Event, MessageKind, MessageRecord, SearchOptions,
    Seq,
};
use serde_json::{json, Map, Value};

async fn say(client: &confab_sdk::Client, conv: ConversationId, body: Value) -> Seq {
    client
        .send_http(
            conv,
            &confab_sdk::new_client_msg_id(),
            MessageKind::Text,
            body,
        )
        .await
        .expect("send")
        .seq
}

fn at(messages: &[MessageRecord], seq: Seq) -> &MessageRecord {
    messages
        .iter()
        .find(|m| m.seq == seq)
        .unwrap_or_else(|| panic!("no seq {seq}"))
}

/// Waits for the `event` frame `name` about `target` in `conv`.
async fn wait_change(
    conn: &mut confab_sdk::Connection,
    name: &str,
    conv: ConversationId,
    target: Seq,
) -> Map<String, Value> {
    let found = conn
        .wait_for(WAIT, |e| {
            matches!(e, Event::ServerEvent(ev)
                if ev.name() == name
                    && ev.fields().get("conversation_id") == Some(&json!(conv))
                    && ev.fields().get("target_seq") == Some(&json!(target)))
        })
        .await
        .unwrap_or_else(|e| panic!("event {name} for {conv}/{target}: {e}"));
    match found {
        Event::ServerEvent(ev) => ev.fields(),
        other => panic!("not an event: {other:?}"),
    }
}

async fn hits(client: &confab_sdk::Client, q: &str) -> usize {
    client
        .search_messages(q, &SearchOptions::default())
        .await
        .expect("search")
        .hits
        .len()
}

/// Everything a brand-new device of this client gets in its first sync.
async fn fresh_sync(client: &confab_sdk::Client, conv: ConversationId) -> Vec<MessageRecord> {
    let mut conn = client.connect(ConnectOptions::default()).expect("connect");
    let mut got = Vec::new();
    loop {
        match conn.next_event_within(WAIT).await.expect("sync") {
            Event::Message(m) if m.conversation_id == conv => got.push(m),
            Event::SyncComplete => return got,
            _ => {}
        }
    }
}

#[tokio::test]
async fn edits_deletes_replies_and_reactions_show_live_in_history_and_in_sync() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let (dan, dan_user) = app.user("dan").await;
    let conv = ann
        .create_group("crew", &[bob_user.id, cat_user.id, dan_user.id])
        .await
        .expect("group")
        .id;
    ann.set_role(conv, cat_user.id, confab_sdk::proto::api::Role::Admin)
        .await
        .expect("cat admin");
    let mut b = connect(&bob).await;

    // Replies: a visible seq of this conversation, else bad_request.
    let m1 = say(&ann, conv, json!({"text": "meet at the wrold cafe"})).await;
    let m2 = say(&bob, conv, json!({"text": "on my way", "reply_to": m1})).await;
    for bad in [json!(0), json!(m2 + 50), json!("1"), json!(1)] {
        assert_refused(
            bob.send_http(
                conv,
                &confab_sdk::new_client_msg_id(),
                MessageKind::Text,
                json!({"text": "x", "reply_to": bad}),
            )
            .await,
            400,
            ErrorCode::BadRequest,
            &format!("reply_to {bad}"),
        );
    }
    let ws = b
        .handle()
        .send(
            conv,
            MessageKind::Text,
            json!({"text": "x", "reply_to": m2 + 50}),
        )
        .await;
    assert!(
        matches!(&ws, Err(e) if e.code() == Some(ErrorCode::BadRequest)),
        "a bad reply over the WebSocket: {ws:?}"
    );

    // Edit: the author only; live as an event with the message, plus a notice.
    assert_refused(
        cat.edit_message(conv, m1, json!({"text": "hijack"})).await,
        403,
        ErrorCode::Forbidden,
        "an admin edits someone else's message",
    );
    let edited = ann
        .edit_message(conv, m1, json!({"text": "meet at the world cafe"}))
        .await
        .expect("edit");
    assert_eq!(edited.body["text"], "meet at the world cafe");
    assert!(edited.edited_at.is_some());
    let ev = wait_change(&mut b, "message_edited", conv, m1).await;
    assert_eq!(ev["message"]["body"]["text"], "meet at the world cafe");
    let notice_seq = ev["seq"].as_i64().expect("seq");
    let hist = all_history(&bob, conv).await;
    let notice = at(&hist, notice_seq);
    assert_eq!(notice.kind, MessageKind::System);
    assert_eq!(notice.body["event"], "message_edited");
    assert_eq!(notice.body["target_seq"], m1);
    assert_eq!(at(&hist, m1).body["text"], "meet at the world cafe");
    assert_refused(
        ann.edit_message(conv, m1, json!({"text": "  "})).await,
        400,
        ErrorCode::BadRequest,
        "an empty text",
    );

    // Reactions: one per user per message, toggled; bad emoji refused.
    let r = bob.react(conv, m1, "👍", true).await.expect("react");
    assert_eq!(r.reactions.get("👍"), Some(&vec![bob_user.id]));
    let ev = wait_change(&mut b, "reaction_changed", conv, m1).await;
    assert_eq!(ev["emoji"], "👍");
    assert_eq!(ev["user_id"], bob_user.id);
    let r = bob.react(conv, m1, "🎉", true).await.expect("replace");
    assert_eq!(r.reactions.len(), 1, "{:?}", r.reactions);
    assert_eq!(r.reactions.get("🎉"), Some(&vec![bob_user.id]));
    dan.react(conv, m1, "🎉", true).await.expect("dan");
    let r = dan.react(conv, m1, "🎉", false).await.expect("off");
    assert_eq!(r.reactions.get("🎉"), Some(&vec![bob_user.id]));
    for bad in ["a b", "0123456789abcdefg", "\u{7}"] {
        assert_refused(
            bob.react(conv, m1, bad, true).await,
            400,
            ErrorCode::BadRequest,
            &format!("emoji {bad:?}"),
        );
    }
    let hist = all_history(&ann, conv).await;
    assert_eq!(
        serde_json::to_value(&at(&hist, m1).reactions).expect("json"),
        json!({"🎉": [bob_user.id]})
    );

    // Deletion: not another member; the author or an admin may.
    assert_refused(
        dan.delete_message(conv, m1).await,
        403,
        ErrorCode::Forbidden,
        "a member deletes someone else's message",
    );
    cat.delete_message(conv, m1).await.expect("admin deletes");
    let ev = wait_change(&mut b, "message_deleted", conv, m1).await;
    assert_eq!(ev["message"]["deleted"], true);
    assert_eq!(ev["message"]["body"], json!({}));
    let own = say(&dan, conv, json!({"text": "oops"})).await;
    dan.delete_message(conv, own).await.expect("author deletes");
    assert_refused(
        ann.edit_message(conv, m1, json!({"text": "back"})).await,
        404,
        ErrorCode::NotFound,
        "editing a deleted message",
    );
    assert_refused(
        ann.delete_message(conv, 9_999).await,
        404,
        ErrorCode::NotFound,
        "deleting what does not exist",
    );

    // History and a fresh sync show the current state.
    for (what, msgs) in [
        ("history", all_history(&bob, conv).await),
        ("sync", fresh_sync(&app.device("bob").await, conv).await),
    ] {
        let gone = at(&msgs, m1);
        assert!(gone.deleted, "{what}");
        assert_eq!(gone.body, json!({}), "{what}");
        assert!(gone.reactions.is_empty(), "{what}");
        assert_eq!(at(&msgs, m2).body["reply_to"], m1, "{what}");
        assert!(at(&msgs, own).deleted, "{what}");
        let events: Vec<&str> = msgs
            .iter()
            .filter(|m| m.kind == MessageKind::System)
            .filter_map(|m| m.body["event"].as_str())
            .collect();
        for name in ["message_edited", "reaction_changed", "message_deleted"] {
            assert!(events.contains(&name), "{what}: {events:?}");
        }
    }
    // Unread counts ignore the notices.
    let view = bob.conversation(conv).await.expect("conv");
    assert!(view.unread_count <= 2, "{}", view.unread_count);
    app.stop().await;
}

#[tokio::test]
async fn search_finds_what_i_can_read_and_jumps_to_the_hit() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (eve, _) = app.user("eve").await;
    let (dan, dan_user) = app.user("dan").await;
    let conv = ann
        .create_group("crew", &[bob_user.id])
        .await
        .expect("group")
        .id;
    let mut hit = 0;
    for i in 0..30 {
        let text = if i == 15 {
            "rendezvous at the <lighthouse> & wait".to_owned()
        } else {
            format!("filler message {i} about the lighthouse keeper's lighthouse lighthouse")
        };
        let seq = say(&ann, conv, json!({ "text": text })).await;
        if i == 15 {
            hit = seq;
        }
    }

    let found = bob
        .search_messages("rendezvous", &SearchOptions::default())
        .await
        .expect("search");
    assert_eq!(found.hits.len(), 1);
    let h = &found.hits[0];
    assert_eq!((h.message.conversation_id, h.message.seq), (conv, hit));
    assert!(
        h.snippet.contains("<mark>rendezvous</mark>"),
        "{}",
        h.snippet
    );
    assert!(
        h.snippet.contains("&lt;lighthouse&gt; &amp; wait"),
        "{}",
        h.snippet
    );

    // The jump: a page centred on the hit.
    let page = bob.history_around(conv, hit, 11).await.expect("around");
    let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, ((hit - 5)..=(hit + 5)).collect::<Vec<_>>());
    assert!(page.has_more);
    assert_eq!(page.has_more_before, Some(true));

    // Ranked and paged with a cursor.
    let opts = SearchOptions {
        limit: Some(10),
        ..Default::default()
    };
    let first = bob.search_messages("lighthouse", &opts).await.expect("p1");
    assert_eq!(first.hits.len(), 10);
    assert_ne!(
        first.hits[0].message.seq, hit,
        "the one-mention message ranks last"
    );
    let mut seen: Vec<Seq> = first.hits.iter().map(|h| h.message.seq).collect();
    let mut cursor = first.next_cursor.clone();
    while let Some(c) = cursor {
        let opts = SearchOptions {
            limit: Some(10),
            cursor: Some(c),
            ..Default::default()
        };
        let next = bob
            .search_messages("lighthouse", &opts)
            .await
            .expect("page");
        seen.extend(next.hits.iter().map(|h| h.message.seq));
        cursor = next.next_cursor;
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(seen.last(), Some(&hit));

    // Bad queries.
    for q in ["", "   ", &"x".repeat(201)] {
        assert_refused(
            bob.search_messages(q, &SearchOptions::default()).await,
            400,
            ErrorCode::BadRequest,
            "query length",
        );
    }
    let junk = SearchOptions {
        cursor: Some("junk!".into()),
        ..Default::default()
    };
    assert_refused(
        bob.search_messages("x", &junk).await,
        400,
        ErrorCode::BadRequest,
        "a junk cursor",
    );

    // Access: an outsider finds nothing; edits re-index; deletions vanish.
    let none = eve
        .search_messages("lighthouse", &SearchOptions::default())
        .await
        .expect("eve");
    assert!(none.hits.is_empty());
    ann.edit_message(conv, hit, json!({"text": "meet by the pier"}))
        .await
        .expect("edit");
    assert_eq!(hits(&bob, "rendezvous").await, 0);
    assert_eq!(hits(&bob, "pier").await, 1);
    ann.delete_message(conv, hit).await.expect("delete");
    assert_eq!(hits(&bob, "pier").await, 0);

    // A newcomer finds only what came after joining; a kicked member
    // finds nothing in the group any more.
    ann.add_members(conv, &[dan_user.id])
        .await
        .expect("add dan");
    say(&ann, conv, json!({"text": "welcome dan to the lighthouse"})).await;
    let dan_hits = dan
        .search_messages("lighthouse", &SearchOptions::default())
        .await
        .expect("dan");
    assert_eq!(dan_hits.hits.len(), 1);
    assert!(dan_hits.hits[0].snippet.contains("welcome"));
    ann.remove_member(conv, bob_user.id)
        .await
        .expect("kick bob");
    say(&ann, conv, json!({"text": "secret lighthouse plans"})).await;
    let after_kick = bob
        .search_messages("lighthouse", &SearchOptions::default())
        .await
        .expect("bob");
    assert!(after_kick.hits.is_empty(), "{:?}", after_kick.hits.len());
    app.stop().await;
}
