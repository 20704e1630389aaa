//! Groups: roles, adds and kicks through the group committer (each one a
//! `system` message in seq order plus a live `event` frame), what former
//! members and strangers may do, the join-time history boundary, the member
//! cap, mentions, mute, unread counts, group read counts and receipts, and
//! fan-out of one message to a 2,000-member group.

use std::collections::HashMap;
use std::time::Instant;

use crate::support::*;
use confab_sdk::proto::api::{
    LoginRequest, Member, RegisterRequest, Role, TokenResponse, UpdateConversationRequest,
};
use confab_sdk::proto::{ClientFrame, ServerFrame};
use confab_sdk::{
    ConversationId, ErrorCode, Event, HistoryQuery, MessageKind, MessageRecord, RawConnection,
    ReceiptKind, Seq, UserId,
};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

fn role_of(members: &[Member], user: UserId) -> Option<Role> {
    members.iter().find(|m| m.user_id == user).map(|m| m.role)
}

fn roles(members: &[Member]) -> Vec<(UserId, Role)> {
    members.iter().map(|m| (m.user_id, m.role)).collect()
}

fn seqs(messages: &[MessageRecord]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

/// The `event` frame a `system` message body should produce: the body's
/// fields without `event`, plus `conversation_id` and `seq`.
fn event_for(body: &Value, conv: ConversationId, seq: Seq) -> (String, Map<String, Value>) {
    let mut data = body.as_object().cloned().expect("system body is an object");
    let name = data
        .remove("event")
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("system body names its event");
    data.insert("conversation_id".into(), conv.into());
    data.insert("seq".into(), seq.into());
    (name, data)
}

fn event_conversation(data: &Map<String, Value>) -> Option<ConversationId> {
    data.get("conversation_id").and_then(Value::as_i64)
}

/// Waits for a `ServerEvent` named `name` about `conv`.
async fn wait_event(
    conn: &mut confab_sdk::Connection,
    name: &str,
    conv: ConversationId,
) -> Map<String, Value> {
    let found = conn
        .wait_for(WAIT, |e| {
            matches!(e, Event::ServerEvent(ev)
                if ev.name() == name && event_conversation(&ev.fields()) == Some(conv))
        })
        .await
        .unwrap_or_else(|e| panic!("event {name} for conversation {conv}: {e}"));
    match found {
        Event::ServerEvent(ev) => ev.fields(),
        other => panic!("not an event: {other:?}"),
    }
}

/// Reads raw frames until `stop` matches one; returns the frames before it.
async fn raw_until(
    raw: &mut RawConnection,
    what: &str,
    mut stop: impl FnMut(&ServerFrame) -> bool,
) -> Vec<ServerFrame> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = raw
            .next_frame_within(left)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if stop(&frame) {
            return before;
        }
        before.push(frame);
    }
}

/// The seqs of up to `n` messages of `conv` an SDK connection delivers
/// within [`WAIT`] (fewer if they do not come).
async fn messages_in(
    conn: &mut confab_sdk::Connection,
    conv: ConversationId,
    n: usize,
) -> Vec<Seq> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next_event_within(left).await {
            Ok(Event::Message(m)) if m.conversation_id == conv => got.push(m.seq),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

fn is_message_in(frame: &ServerFrame, conv: ConversationId) -> bool {
    matches!(frame, ServerFrame::Message(m) if m.conversation_id == conv)
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn group_lifecycle_with_roles_kicks_and_ownership() {
    let app = spawn_app().await;
    // fay registers first (lowest user id) but joins last: the heir rule
    // must pick by length of membership, not by id.
    let (fay, fay_user) = app.user("fay").await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let (dan, dan_user) = app.user("dan").await;
    let (_eve, eve_user) = app.user("eve").await;
    let (gil, gil_user) = app.user("gil").await;
    let (ann_id, bob_id, cat_id, dan_id, eve_id, fay_id, gil_id) = (
        ann_user.id,
        bob_user.id,
        cat_user.id,
        dan_user.id,
        eve_user.id,
        fay_user.id,
        gil_user.id,
    );
    let mut b = connect(&bob).await;
    let mut f = connect(&fay).await;
    let mut g = connect(&gil).await;

    let conv = ann
        .create_group("crew", &[bob_id, cat_id, dan_id, eve_id])
        .await
        .expect("create group");
    let id = conv.id;
    assert_eq!(conv.title.as_deref(), Some("crew"));
    assert_eq!(conv.member_count, 5);
    assert_eq!(conv.last_seq, 1, "group_created notice is seq 1");
    assert_eq!(
        roles(&conv.members),
        vec![
            (ann_id, Role::Owner),
            (bob_id, Role::Member),
            (cat_id, Role::Member),
            (dan_id, Role::Member),
            (eve_id, Role::Member),
        ]
    );
    let added = wait_event(&mut b, "conversation_added", id).await;
    assert_eq!(added.get("by_user_id"), Some(&json!(ann_id)));

    // Adding: owner may; re-adding members is a no-op; plain members may not.
    let members = ann.add_members(id, &[fay_id]).await.expect("add fay");
    let fay_member = members.iter().find(|m| m.user_id == fay_id).expect("fay");
    assert_eq!(
        (fay_member.role, fay_member.joined_seq),
        (Role::Member, 1),
        "joined_seq is the notice's seq - 1"
    );
    let added = wait_event(&mut f, "conversation_added", id).await;
    assert_eq!(added.get("by_user_id"), Some(&json!(ann_id)));
    let again = ann
        .add_members(id, &[bob_id, fay_id])
        .await
        .expect("re-adding members");
    assert_eq!(again.len(), 6);
    assert_eq!(ann.conversation(id).await.expect("conv").last_seq, 2);
    assert_refused(
        bob.add_members(id, &[gil_id]).await,
        403,
        ErrorCode::Forbidden,
        "a plain member adds without members_can_add",
    );

    // Roles: only the owner sets them.
    ann.set_role(id, cat_id, Role::Admin)
        .await
        .expect("cat admin");
    ann.set_role(id, dan_id, Role::Admin)
        .await
        .expect("dan admin");
    let members = ann
        .set_role(id, fay_id, Role::Admin)
        .await
        .expect("fay admin");
    assert_eq!(role_of(&members, fay_id), Some(Role::Admin));
    assert_refused(
        cat.set_role(id, bob_id, Role::Admin).await,
        403,
        ErrorCode::Forbidden,
        "an admin sets a role",
    );
    assert_refused(
        bob.set_role(id, bob_id, Role::Admin).await,
        403,
        ErrorCode::Forbidden,
        "a member promotes himself",
    );

    // Kicks: admins kick members, never upwards; members kick nobody.
    cat.remove_member(id, eve_id)
        .await
        .expect("admin kicks member");
    assert_refused(
        cat.remove_member(id, dan_id).await,
        403,
        ErrorCode::Forbidden,
        "admin kicks admin",
    );
    assert_refused(
        cat.remove_member(id, ann_id).await,
        403,
        ErrorCode::Forbidden,
        "admin kicks owner",
    );
    assert_refused(
        bob.remove_member(id, fay_id).await,
        403,
        ErrorCode::Forbidden,
        "member kicks admin",
    );
    assert_refused(
        bob.remove_member(id, gil_id).await,
        404,
        ErrorCode::NotFound,
        "removing a non-member",
    );

    // Settings: not by members; admins may, and may open adding to all.
    let rename = UpdateConversationRequest {
        title: Some("crew 2".into()),
        ..Default::default()
    };
    assert_refused(
        bob.update_conversation(id, &rename).await,
        403,
        ErrorCode::Forbidden,
        "member renames",
    );
    let open = UpdateConversationRequest {
        title: Some("crew 2".into()),
        members_can_add: Some(true),
        ..Default::default()
    };
    let view = cat.update_conversation(id, &open).await.expect("admin");
    assert_eq!(
        (view.title.as_deref(), view.members_can_add),
        (Some("crew 2"), true)
    );
    bob.add_members(id, &[gil_id])
        .await
        .expect("a member adds once members_can_add");
    let added = wait_event(&mut g, "conversation_added", id).await;
    assert_eq!(added.get("by_user_id"), Some(&json!(bob_id)));

    // Ownership: handed over (the old owner becomes admin) ...
    let members = ann
        .set_role(id, cat_id, Role::Owner)
        .await
        .expect("hand over");
    assert_eq!(
        (role_of(&members, cat_id), role_of(&members, ann_id)),
        (Some(Role::Owner), Some(Role::Admin))
    );
    assert_refused(
        ann.set_role(id, bob_id, Role::Admin).await,
        403,
        ErrorCode::Forbidden,
        "the former owner sets a role",
    );
    ann.leave(id).await.expect("ann leaves");
    // ... and passed on when the owner leaves: the longest-serving admin
    // (dan, since creation) rather than fay (admin with a lower id, later).
    cat.leave(id).await.expect("owner leaves");
    let members = dan.members(id).await.expect("members");
    assert_eq!(role_of(&members, dan_id), Some(Role::Owner), "{members:?}");
    assert_eq!(role_of(&members, fay_id), Some(Role::Admin));
    // With no admin left, the longest-serving member inherits: bob (since
    // creation) rather than fay (lower id, later) or gil.
    dan.set_role(id, fay_id, Role::Member)
        .await
        .expect("demote fay");
    dan.leave(id).await.expect("dan leaves");
    let members = bob.members(id).await.expect("members");
    assert_eq!(
        roles(&members),
        vec![
            (fay_id, Role::Member),
            (bob_id, Role::Owner),
            (gil_id, Role::Member),
        ]
    );

    let want = vec![
        json!({"event": "group_created", "title": "crew", "by_user_id": ann_id}),
        json!({"event": "member_joined", "user_ids": [fay_id], "by_user_id": ann_id}),
        json!({"event": "role_changed", "user_id": cat_id, "role": "admin", "by_user_id": ann_id}),
        json!({"event": "role_changed", "user_id": dan_id, "role": "admin", "by_user_id": ann_id}),
        json!({"event": "role_changed", "user_id": fay_id, "role": "admin", "by_user_id": ann_id}),
        json!({"event": "member_left", "user_id": eve_id, "by_user_id": cat_id, "reason": "removed"}),
        json!({"event": "conversation_updated", "title": "crew 2", "avatar_media_id": null,
               "members_can_add": true, "by_user_id": cat_id}),
        json!({"event": "member_joined", "user_ids": [gil_id], "by_user_id": bob_id}),
        json!({"event": "role_changed", "user_id": cat_id, "role": "owner", "by_user_id": ann_id}),
        json!({"event": "role_changed", "user_id": ann_id, "role": "admin", "by_user_id": ann_id}),
        json!({"event": "member_left", "user_id": ann_id, "by_user_id": ann_id, "reason": "left"}),
        json!({"event": "member_left", "user_id": cat_id, "by_user_id": cat_id, "reason": "left"}),
        json!({"event": "role_changed", "user_id": dan_id, "role": "owner", "by_user_id": cat_id}),
        json!({"event": "role_changed", "user_id": fay_id, "role": "member", "by_user_id": dan_id}),
        json!({"event": "member_left", "user_id": dan_id, "by_user_id": dan_id, "reason": "left"}),
        json!({"event": "role_changed", "user_id": bob_id, "role": "owner", "by_user_id": dan_id}),
    ];
    let last = want.len() as Seq;

    // History: one system message per change, in seq order, sent by the actor.
    let history = all_history(&bob, id).await;
    assert_eq!(seqs(&history), (1..=last).collect::<Vec<_>>());
    assert!(history.iter().all(|m| m.kind == MessageKind::System));
    let bodies: Vec<_> = history.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, want);
    for m in &history {
        assert_eq!(Some(&json!(m.sender_id)), m.body.get("by_user_id"));
    }

    // Live on bob's connection: the same system messages in order, and one
    // `event` frame per change (2..) with the notice's fields.
    let mut live_messages = Vec::new();
    let mut live_events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while live_messages.len() < want.len() || live_events.len() < want.len() - 1 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match b.next_event_within(left).await {
            Ok(Event::Message(m)) if m.conversation_id == id => live_messages.push(m),
            Ok(Event::ServerEvent(ev))
                if ev.name() != "conversation_added" && ev.conversation_id() == Some(id) =>
            {
                live_events.push((ev.name().to_owned(), ev.fields()));
            }
            Ok(_) => {}
            Err(e) => panic!(
                "bob's live stream: {e}; got messages {:?} and events {:?}",
                seqs(&live_messages),
                live_events.iter().map(|(n, _)| n).collect::<Vec<_>>()
            ),
        }
    }
    assert_eq!(
        live_messages
            .iter()
            .map(|m| (m.seq, m.body.clone()))
            .collect::<Vec<_>>(),
        want.iter()
            .cloned()
            .enumerate()
            .map(|(i, b)| (i as Seq + 1, b))
            .collect::<Vec<_>>()
    );
    let want_events: Vec<_> = want
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, body)| event_for(body, id, i as Seq + 1))
        .collect();
    assert_eq!(live_events, want_events);
}

#[tokio::test]
async fn kicked_member_cannot_read_send_or_receive() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let (dan, _) = app.user("dan").await;
    let bob_tablet = app.device("bob").await;
    let conv = ann
        .create_group("team", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    let id = conv.id;
    let direct_conv = direct(&ann, &bob_user).await;
    let mut b = connect(&bob).await;
    let mut c = connect(&cat).await;
    let mut b_raw = raw_connect(&bob_tablet).await;

    let before = ann
        .send_http(id, "before-1", MessageKind::Text, json!({"text": "before"}))
        .await
        .expect("send");
    assert_eq!(before.seq, 2);
    let got = b
        .wait_for(
            WAIT,
            |e| matches!(e, Event::Message(m) if m.conversation_id == id && m.seq == 2),
        )
        .await
        .expect("bob gets the message while a member");
    assert!(matches!(got, Event::Message(m) if text(&m) == "before"));
    raw_until(
        &mut b_raw,
        "bob's tablet gets seq 2",
        |f| matches!(f, ServerFrame::Message(m) if m.conversation_id == id && m.seq == 2),
    )
    .await;

    ann.remove_member(id, bob_user.id).await.expect("kick bob");
    let left = wait_event(&mut b, "member_left", id).await;
    assert_eq!(left.get("user_id"), Some(&json!(bob_user.id)));
    assert_eq!(left.get("reason"), Some(&json!("removed")));
    assert_eq!(left.get("seq"), Some(&json!(3)));

    // The others keep chatting.
    ann.send_http(id, "after-1", MessageKind::Text, json!({"text": "after 1"}))
        .await
        .expect("send");
    let ack = c.send_text(id, "after 2").await.expect("cat sends");
    assert_eq!(ack.seq, 5);
    let mut cat_saw = Vec::new();
    while cat_saw.last().map(|m: &MessageRecord| m.seq) != Some(5) {
        let m = c.next_message(WAIT).await.expect("cat's stream");
        if m.conversation_id == id {
            cat_saw.push(m);
        }
    }
    assert_eq!(
        cat_saw
            .iter()
            .filter(|m| m.seq >= 3)
            .map(|m| (m.seq, m.kind))
            .collect::<Vec<_>>(),
        vec![
            (3, MessageKind::System),
            (4, MessageKind::Text),
            (5, MessageKind::Text)
        ]
    );

    // A direct message sent after them is a barrier: group messages, had
    // they been delivered to bob, would have come before it.
    ann.send_http(
        direct_conv.id,
        "direct-1",
        MessageKind::Text,
        json!({"text": "barrier"}),
    )
    .await
    .expect("direct");
    let frames = raw_until(&mut b_raw, "bob's tablet gets the direct message", |f| {
        is_message_in(f, direct_conv.id)
    })
    .await;
    let leaked: Vec<_> = frames.iter().filter(|f| is_message_in(f, id)).collect();
    assert!(
        leaked.is_empty(),
        "a kicked member's socket got group messages: {leaked:?}"
    );
    let mut sdk_leaked = Vec::new();
    loop {
        match b.next_event_within(WAIT).await.expect("bob's stream") {
            Event::Message(m) if m.conversation_id == direct_conv.id => break,
            Event::Message(m) if m.conversation_id == id => sdk_leaked.push(m.seq),
            _ => {}
        }
    }
    assert!(
        sdk_leaked.is_empty(),
        "bob's SDK connection got group messages after the kick: {sdk_leaked:?}"
    );

    // Former member: forbidden everywhere.
    assert_refused(
        bob.history(id, HistoryQuery::default()).await,
        403,
        ErrorCode::Forbidden,
        "former member reads history",
    );
    assert_refused(
        bob.send_http(id, "late-1", MessageKind::Text, json!({"text": "hi?"}))
            .await,
        403,
        ErrorCode::Forbidden,
        "former member sends over http",
    );
    assert_refused(
        bob.conversation(id).await,
        403,
        ErrorCode::Forbidden,
        "former member views",
    );
    assert_refused(
        bob.members(id).await,
        403,
        ErrorCode::Forbidden,
        "former member lists members",
    );
    assert_refused(
        bob.mark_read(id, 5).await,
        403,
        ErrorCode::Forbidden,
        "former member marks read",
    );
    assert_refused(
        bob.add_members(id, &[bob_user.id]).await,
        403,
        ErrorCode::Forbidden,
        "former member re-adds himself",
    );
    match b.send_text(id, "over ws").await {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}"),
        Ok(ack) => panic!("former member sent over ws: {ack:?}"),
    }
    b.typing(id, confab_sdk::TypingState::Start)
        .await
        .expect("typing frame sent");
    match b.wait_for(WAIT, |e| matches!(e, Event::Error(_))).await {
        Ok(Event::Error(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "typing: {e:?}"),
        other => panic!("former member typing: {other:?}"),
    }
    let listed = bob.conversations().await.expect("list");
    assert!(
        listed.iter().all(|c| c.id != id),
        "the group is gone from bob's list"
    );

    // A stranger: not found.
    assert_refused(
        dan.history(id, HistoryQuery::default()).await,
        404,
        ErrorCode::NotFound,
        "stranger reads history",
    );
    assert_refused(
        dan.send_http(id, "stranger-1", MessageKind::Text, json!({"text": "hi"}))
            .await,
        404,
        ErrorCode::NotFound,
        "stranger sends",
    );
    assert_refused(
        dan.conversation(id).await,
        404,
        ErrorCode::NotFound,
        "stranger views",
    );

    // The group goes on without bob.
    assert_eq!(seqs(&all_history(&cat, id).await), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn new_members_see_history_from_their_join_on() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let conv = ann
        .create_group("book club", &[bob_user.id])
        .await
        .expect("group");
    let id = conv.id;
    for (client, key, body) in [
        (&ann, "old-1", "old 1"),
        (&ann, "old-2", "old 2"),
        (&bob, "old-3", "old 3"),
    ] {
        client
            .send_http(id, key, MessageKind::Text, json!({ "text": body }))
            .await
            .expect("send before");
    }
    let mut cat_phone = connect(&app.device("cat").await).await;
    let members = ann.add_members(id, &[cat_user.id]).await.expect("add cat");
    wait_event(&mut cat_phone, "conversation_added", id).await;
    let cat_member = members
        .iter()
        .find(|m| m.user_id == cat_user.id)
        .expect("cat");
    assert_eq!(cat_member.joined_seq, 4, "notice at 5, visible from 5 on");
    ann.send_http(id, "new-1", MessageKind::Text, json!({"text": "new 1"}))
        .await
        .expect("send after");
    bob.send_http(id, "new-2", MessageKind::Text, json!({"text": "new 2"}))
        .await
        .expect("send after");

    // History.
    let seen = all_history(&cat, id).await;
    assert_eq!(seqs(&seen), vec![5, 6, 7]);
    assert_eq!(seen[0].kind, MessageKind::System);
    assert_eq!(seen[0].body["event"], "member_joined");
    assert_eq!(
        seen[1..].iter().map(text).collect::<Vec<_>>(),
        vec!["new 1", "new 2"]
    );
    let newest = cat
        .history(id, HistoryQuery::default())
        .await
        .expect("newest page");
    assert_eq!(seqs(&newest.messages), vec![5, 6, 7]);
    assert!(!newest.has_more, "nothing older is visible");
    let older = cat
        .history(id, HistoryQuery::before(5, 50))
        .await
        .expect("older page");
    assert!(older.messages.is_empty(), "{:?}", seqs(&older.messages));
    assert!(!older.has_more);
    let view = cat.conversation(id).await.expect("view");
    assert_eq!(view.last_message.map(|m| m.seq), Some(7));
    assert_eq!(
        seqs(&all_history(&bob, id).await),
        (1..=7).collect::<Vec<_>>()
    );

    // Sync, at the protocol level: from the join notice on, whatever the
    // cursor says.
    let mut raw = raw_connect(&cat).await;
    for cursors in [HashMap::new(), HashMap::from([(id, 0)])] {
        raw.send_frame(&ClientFrame::Sync { cursors })
            .await
            .expect("sync");
        let frames = raw_until(&mut raw, "sync_done", |f| {
            matches!(f, ServerFrame::SyncDone { .. })
        })
        .await;
        let synced: Vec<Seq> = frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Message(m) if m.conversation_id == id => Some(m.seq),
                _ => None,
            })
            .collect();
        assert_eq!(synced, vec![5, 6, 7]);
    }

    // Through the SDK: a device that was online when cat was added, and a
    // fresh connection, both deliver exactly what the newcomer may see.
    let mut fresh = cat
        .connect(confab_sdk::ConnectOptions::default())
        .expect("connect");
    let (live_seqs, fresh_seqs) = tokio::join!(
        messages_in(&mut cat_phone, id, 3),
        messages_in(&mut fresh, id, 3)
    );
    assert_eq!(
        (live_seqs, fresh_seqs),
        (vec![5, 6, 7], vec![5, 6, 7]),
        "(already-connected device, fresh connection) of a member added at seq 5 \
         deliver the group's messages from the join notice on"
    );
}

#[tokio::test]
async fn the_member_cap_holds_on_create_and_on_add() {
    let app = spawn_app_with(|c| c.chat.max_group_members = 3).await;
    let (ann, _) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    let (_, cat) = app.user("cat").await;
    let (_, dan) = app.user("dan").await;
    let (_, eve) = app.user("eve").await;

    assert_refused(
        ann.create_group("big", &[bob.id, cat.id, dan.id]).await,
        409,
        ErrorCode::GroupFull,
        "create with owner + 3 over a cap of 3",
    );
    assert!(
        ann.conversations().await.expect("list").is_empty(),
        "a refused create leaves nothing behind"
    );
    // Duplicates and the owner naming himself do not count twice.
    let conv = ann
        .create_group("full", &[bob.id, cat.id, bob.id])
        .await
        .expect("create at the cap");
    let id = conv.id;
    assert_eq!(conv.member_count, 3);

    assert_refused(
        ann.add_members(id, &[dan.id]).await,
        409,
        ErrorCode::GroupFull,
        "add over the cap",
    );
    ann.add_members(id, &[bob.id])
        .await
        .expect("re-adding a member at the cap is a no-op, not group_full");
    let view = ann.conversation(id).await.expect("view");
    assert_eq!(
        (view.member_count, view.last_seq),
        (3, 1),
        "nothing written"
    );

    ann.remove_member(id, cat.id).await.expect("kick cat");
    assert_refused(
        ann.add_members(id, &[dan.id, eve.id]).await,
        409,
        ErrorCode::GroupFull,
        "two into one free place",
    );
    let members = ann.add_members(id, &[dan.id]).await.expect("one fits");
    assert_eq!(members.iter().map(|m| m.user_id).collect::<Vec<_>>(), {
        let mut ids = vec![ann.session().expect("session").user.id, bob.id, dan.id];
        ids.sort_unstable();
        ids
    });
    assert_eq!(ann.conversation(id).await.expect("view").member_count, 3);
}

#[tokio::test]
async fn mentions_mute_and_unread_counts() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let (dan, dan_user) = app.user("dan").await;
    let conv = ann
        .create_group("chat", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    let id = conv.id;
    let mut b = connect(&bob).await;
    let c = connect(&cat).await;

    let mention = |text: &str, who: &[UserId]| json!({"text": text, "mentions": who});
    ann.send_http(
        id,
        "m-2",
        MessageKind::Text,
        mention("hi @bob", &[bob_user.id]),
    )
    .await
    .expect("send");
    ann.send_http(id, "m-3", MessageKind::Text, json!({"text": "plain"}))
        .await
        .expect("send");
    c.send(
        id,
        MessageKind::Text,
        mention("@bob @ann", &[bob_user.id, ann_user.id, bob_user.id]),
    )
    .await
    .expect("cat mentions over ws");
    // Mentions of oneself and of non-members count for nobody.
    ann.send_http(
        id,
        "m-5",
        MessageKind::Text,
        mention("me and dan", &[ann_user.id, dan_user.id]),
    )
    .await
    .expect("send");

    let find = |list: Vec<confab_sdk::Conversation>| {
        list.into_iter()
            .find(|c| c.id == id)
            .expect("the group is listed")
    };
    let bob_view = find(bob.conversations().await.expect("list"));
    assert_eq!(bob_view.unread_mentions, 2, "seq 2 and 4 mention bob");
    assert_eq!(
        bob_view.unread_count, 4,
        "seqs 2-5 are from others; the group_created notice does not count"
    );
    let ann_view = find(ann.conversations().await.expect("list"));
    assert_eq!((ann_view.unread_mentions, ann_view.unread_count), (1, 1));
    let cat_view = find(cat.conversations().await.expect("list"));
    assert_eq!(cat_view.unread_mentions, 0);
    assert!(
        dan.conversations().await.expect("list").is_empty(),
        "a mention does not make dan a member"
    );

    bob.mark_read(id, 2).await.expect("read 2");
    let bob_view = bob.conversation(id).await.expect("view");
    assert_eq!((bob_view.unread_mentions, bob_view.unread_count), (1, 3));
    bob.mark_read(id, 5).await.expect("read all");
    let bob_view = bob.conversation(id).await.expect("view");
    assert_eq!((bob_view.unread_mentions, bob_view.unread_count), (0, 0));

    // Mute is bob's own setting; messages still arrive.
    let muted = bob.set_muted(id, true).await.expect("mute");
    assert!(muted.muted);
    assert!(find(bob.conversations().await.expect("list")).muted);
    assert!(!find(ann.conversations().await.expect("list")).muted);
    assert!(!cat.conversation(id).await.expect("view").muted);
    let ack = ann
        .send_http(
            id,
            "m-6",
            MessageKind::Text,
            mention("still there?", &[bob_user.id]),
        )
        .await
        .expect("send to a muted member");
    let got = b
        .wait_for(
            WAIT,
            |e| matches!(e, Event::Message(m) if m.conversation_id == id && m.seq == ack.seq),
        )
        .await
        .expect("a muted member still gets messages");
    assert!(matches!(got, Event::Message(m) if text(&m) == "still there?"));
    let bob_view = bob.conversation(id).await.expect("view");
    assert_eq!(
        (
            bob_view.muted,
            bob_view.unread_mentions,
            bob_view.unread_count
        ),
        (true, 1, 1)
    );
    assert_eq!(
        bob.conversation(id).await.expect("view").last_seq,
        ack.seq,
        "muting wrote no message"
    );
    assert!(!bob.set_muted(id, false).await.expect("unmute").muted);
    assert!(!find(bob.conversations().await.expect("list")).muted);
}

#[tokio::test]
async fn group_history_counts_readers_of_my_messages() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let (dan, dan_user) = app.user("dan").await;
    let conv = ann
        .create_group("readers", &[bob_user.id, cat_user.id, dan_user.id])
        .await
        .expect("group");
    let id = conv.id;
    for i in 1..=3 {
        ann.send_http(
            id,
            &format!("a-{i}"),
            MessageKind::Text,
            json!({"text": format!("a{i}")}),
        )
        .await
        .expect("send");
    }
    bob.send_http(id, "b-1", MessageKind::Text, json!({"text": "b1"}))
        .await
        .expect("send");
    // seqs: 1 created, 2-4 ann's, 5 bob's.
    bob.mark_read(id, 3).await.expect("bob reads 3");
    cat.mark_read(id, 5).await.expect("cat reads 5");

    let counts = |page: &[MessageRecord]| -> Vec<(Seq, Option<u32>)> {
        page.iter()
            .filter(|m| m.kind == MessageKind::Text)
            .map(|m| (m.seq, m.read_by))
            .collect()
    };
    let page = all_history(&ann, id).await;
    assert_eq!(
        counts(&page),
        vec![(2, Some(2)), (3, Some(2)), (4, Some(1)), (5, None)],
        "bob read to 3, cat to 5, dan nothing; bob's message has no count for ann"
    );
    let page = all_history(&bob, id).await;
    assert_eq!(
        counts(&page),
        vec![(2, None), (3, None), (4, None), (5, Some(1))],
        "only cat has read bob's message (ann's own sends do not move her cursor)"
    );

    // Reading past the end counts as reading to the end.
    dan.mark_read(id, 1_000).await.expect("dan reads all");
    assert_eq!(dan.conversation(id).await.expect("view").read_seq, 5);
    let page = all_history(&ann, id).await;
    assert_eq!(
        counts(&page),
        vec![(2, Some(3)), (3, Some(3)), (4, Some(2)), (5, None)]
    );
    assert_eq!(
        counts(&all_history(&bob, id).await),
        vec![(2, None), (3, None), (4, None), (5, Some(2))]
    );
    let newest_two = ann
        .history(
            id,
            HistoryQuery {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(counts(&newest_two.messages), vec![(4, Some(2)), (5, None)]);

    // Direct conversations carry no counts.
    let d = direct(&ann, &bob_user).await;
    ann.send_http(d.id, "d-1", MessageKind::Text, json!({"text": "hi"}))
        .await
        .expect("direct");
    bob.mark_read(d.id, 1).await.expect("read direct");
    assert_eq!(counts(&all_history(&ann, d.id).await), vec![(1, None)]);
}

#[tokio::test]
async fn small_groups_share_read_receipts_but_never_delivered_ones() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let conv = ann
        .create_group("receipts", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    let id = conv.id;
    ann.send_http(id, "r-2", MessageKind::Text, json!({"text": "read me"}))
        .await
        .expect("send");
    let mut ann_raw = raw_connect(&ann).await;
    let mut cat_sdk = connect(&cat).await;
    let mut bob_raw = raw_connect(&bob).await;

    bob_raw
        .send_frame(&ClientFrame::Delivered {
            conversation_id: id,
            seq: 2,
        })
        .await
        .expect("delivered");
    bob_raw
        .send_frame(&ClientFrame::Read {
            conversation_id: id,
            seq: 2,
        })
        .await
        .expect("read");
    // The read receipt reaches every member; a delivered receipt, which
    // would have been published before it, reaches nobody.
    let before = raw_until(&mut ann_raw, "ann gets bob's read receipt", |f| {
        matches!(f, ServerFrame::Receipt { conversation_id, user_id, kind: ReceiptKind::Read, seq: 2 }
            if *conversation_id == id && *user_id == bob_user.id)
    })
    .await;
    let delivered: Vec<_> = before
        .iter()
        .filter(|f| {
            matches!(
                f,
                ServerFrame::Receipt {
                    kind: ReceiptKind::Delivered,
                    ..
                }
            )
        })
        .collect();
    assert!(
        delivered.is_empty(),
        "delivered receipts are not sent in groups: {delivered:?}"
    );
    cat_sdk
        .wait_for(WAIT, |e| {
            matches!(e, Event::Receipt { conversation_id, user_id, kind: ReceiptKind::Read, seq: 2 }
                if *conversation_id == id && *user_id == bob_user.id)
        })
        .await
        .expect("cat gets bob's read receipt");
    assert_eq!(
        ann.conversation(id)
            .await
            .expect("view")
            .members
            .iter()
            .find(|m| m.user_id == bob_user.id)
            .map(|m| m.read_seq),
        Some(2)
    );
}

#[tokio::test]
async fn read_receipts_in_bigger_groups_reach_only_the_readers_devices() {
    let app = spawn_app_with(|c| c.chat.receipts_max_group = 2).await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;
    let bob_phone = app.device("bob").await;
    let conv = ann
        .create_group("three", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    let id = conv.id;
    ann.send_http(id, "r-2", MessageKind::Text, json!({"text": "read me"}))
        .await
        .expect("send");
    let mut ann_raw = raw_connect(&ann).await;
    let mut phone = connect(&bob_phone).await;

    bob.mark_read(id, 2).await.expect("bob reads");
    phone
        .wait_for(WAIT, |e| {
            matches!(e, Event::Receipt { conversation_id, user_id, kind: ReceiptKind::Read, seq: 2 }
                if *conversation_id == id && *user_id == bob_user.id)
        })
        .await
        .expect("bob's other device hears of his read cursor");
    // Barrier: cat's message is published after bob's receipt; a receipt
    // for ann would have come first (control frames go ahead of messages).
    cat.send_http(id, "c-3", MessageKind::Text, json!({"text": "barrier"}))
        .await
        .expect("send");
    let before = raw_until(&mut ann_raw, "ann gets cat's message", |f| {
        is_message_in(f, id)
    })
    .await;
    let receipts: Vec<_> = before
        .iter()
        .filter(|f| matches!(f, ServerFrame::Receipt { .. }))
        .collect();
    assert!(
        receipts.is_empty(),
        "a group over receipts_max_group shares no receipts: {receipts:?}"
    );
    // The count is still in ann's history.
    let page = all_history(&ann, id).await;
    assert_eq!(
        page.iter().find(|m| m.seq == 2).and_then(|m| m.read_by),
        Some(1)
    );
}

/// Registers and logs in one user over a shared HTTP client; returns the
/// user id and an access token.
async fn register_member(http: &reqwest::Client, base: &str, name: String) -> (UserId, String) {
    let reg = RegisterRequest {
        username: name.clone(),
        password: PASSWORD.into(),
        display_name: None,
    };
    let resp = http
        .post(format!("{base}/v1/auth/register"))
        .json(&reg)
        .send()
        .await
        .expect("register");
    assert!(
        resp.status().is_success(),
        "register {name}: {}",
        resp.status()
    );
    let login = LoginRequest {
        username: name.clone(),
        password: PASSWORD.into(),
        device_name: None,
        device_public_key: None,
    };
    let resp = http
        .post(format!("{base}/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .expect("login");
    assert!(
        resp.status().is_success(),
        "login {name}: {}",
        resp.status()
    );
    let tokens: TokenResponse = resp.json().await.expect("tokens");
    (tokens.user.id, tokens.access_token)
}

/// Reads until the next `message` frame; other frames are skipped.
async fn next_message_frame(raw: &mut RawConnection) -> confab_sdk::Result<MessageRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let ServerFrame::Message(m) = raw.next_frame_within(left).await? {
            return Ok(m);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_fans_out_to_a_2000_member_group_all_online() {
    const MEMBERS: usize = 2_000;
    const PARALLEL: usize = 32;
    // Idle sockets must outlive the setup.
    let app = spawn_app_with(|c| c.heartbeat_s = 300).await;
    let started = Instant::now();
    let (owner, _) = app.user("owner").await;
    let http = app.http();
    let base = app.base_url.clone();
    let users: Vec<(UserId, String)> = stream::iter(1..MEMBERS)
        .map(|i| register_member(&http, &base, format!("member{i:04}")))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let registered = started.elapsed();
    let ids: Vec<UserId> = users.iter().map(|(id, _)| *id).collect();
    let conv = owner.create_group("everyone", &ids).await.expect("group");
    let id = conv.id;
    assert_eq!(conv.member_count, MEMBERS as i64);
    assert_eq!(
        conv.members.len(),
        confab_sdk::proto::api::MEMBERS_INLINE_MAX,
        "big groups list only the first members inline"
    );
    assert_eq!(owner.members(id).await.expect("members").len(), MEMBERS);

    let ws = owner.ws_url();
    let mut conns: Vec<(UserId, RawConnection)> = stream::iter(users)
        .map(|(user, token)| {
            let ws = ws.clone();
            async move {
                let mut raw = confab_sdk::raw::connect(&ws, Some(&token))
                    .await
                    .expect("raw connect");
                hello(&mut raw).await;
                (user, raw)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    assert_eq!(conns.len(), MEMBERS - 1);
    let setup = started.elapsed();
    eprintln!(
        "fan-out setup: {} users registered in {:.1?}, group created and {} sockets open at {:.1?}",
        MEMBERS,
        registered,
        conns.len(),
        setup
    );

    let sent_at = Instant::now();
    let ack = owner
        .send_http(
            id,
            "fanout-1",
            MessageKind::Text,
            json!({"text": "hello everyone"}),
        )
        .await
        .expect("send");
    assert_eq!(ack.seq, 2);
    let firsts = futures_util::future::join_all(
        conns
            .iter_mut()
            .map(|(user, raw)| async move { (*user, next_message_frame(raw).await) }),
    )
    .await;
    let fanned_out = sent_at.elapsed();
    let mut wrong = Vec::new();
    for (user, got) in &firsts {
        match got {
            Ok(m) if m.conversation_id == id && m.seq == 2 && text(m) == "hello everyone" => {}
            other => wrong.push((*user, format!("{other:?}"))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} members did not get the message once: first few {:?}",
        wrong.len(),
        MEMBERS - 1,
        &wrong[..wrong.len().min(5)]
    );

    // Exactly once: the next message on every socket is the following one,
    // not a repeat.
    let ack = owner
        .send_http(id, "fanout-2", MessageKind::Text, json!({"text": "again"}))
        .await
        .expect("send");
    assert_eq!(ack.seq, 3);
    let seconds = futures_util::future::join_all(
        conns
            .iter_mut()
            .map(|(user, raw)| async move { (*user, next_message_frame(raw).await) }),
    )
    .await;
    let repeats: Vec<_> = seconds
        .iter()
        .filter(|(_, got)| !matches!(got, Ok(m) if m.conversation_id == id && m.seq == 3))
        .map(|(user, got)| (*user, format!("{got:?}")))
        .collect();
    assert!(
        repeats.is_empty(),
        "{} members got something else after the first message: first few {:?}",
        repeats.len(),
        &repeats[..repeats.len().min(5)]
    );
    eprintln!(
        "fan-out: one message to {} sockets in {:.1?}; total {:.1?}",
        MEMBERS - 1,
        fanned_out,
        started.elapsed()
    );
}
