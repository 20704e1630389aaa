//! Friends, friend requests, blocking and the direct-message policy,
//! through the SDK against the real server.

use crate::support::*;
use confab_sdk::proto::api::FriendRequestState;
use confab_sdk::{Direction, ErrorCode, Event, MessageKind};
use serde_json::json;

/// Waits for an `event` frame named `name`.
async fn wait_event(
    conn: &mut confab_sdk::Connection,
    name: &str,
) -> serde_json::Map<String, serde_json::Value> {
    match conn
        .wait_for(
            WAIT,
            |e| matches!(e, Event::ServerEvent(ev) if ev.name() == name),
        )
        .await
    {
        Ok(Event::ServerEvent(ev)) => ev.fields(),
        other => panic!("waiting for {name}: {other:?}"),
    }
}

#[tokio::test]
async fn a_friend_request_is_seen_live_and_after_reconnect_then_accepted() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let mut b = connect(&bob).await;

    let sent = ann
        .send_friend_request(bob_user.id, Some("hi, it's ann from work"))
        .await
        .expect("request");
    assert_eq!(sent.status, FriendRequestState::Pending);
    let request = sent.request.expect("the pending request");
    assert_eq!(
        (request.from_user.id, request.to_user.id),
        (ann_user.id, bob_user.id)
    );

    let live = wait_event(&mut b, "friend_request").await;
    assert_eq!(live["request"]["id"], json!(request.id));
    assert_eq!(live["request"]["message"], json!("hi, it's ann from work"));

    // Asking again changes nothing.
    let again = ann
        .send_friend_request(bob_user.id, None)
        .await
        .expect("again");
    assert_eq!(again.request.map(|r| r.id), Some(request.id));

    // After a reconnect the request is still listed, both ways.
    b.close().await;
    let incoming = bob
        .friend_requests(Direction::Incoming)
        .await
        .expect("incoming");
    assert_eq!(
        incoming.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![request.id]
    );
    let outgoing = ann
        .friend_requests(Direction::Outgoing)
        .await
        .expect("outgoing");
    assert_eq!(
        outgoing.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![request.id]
    );
    assert!(ann
        .friend_requests(Direction::Incoming)
        .await
        .expect("none")
        .is_empty());

    // Only the addressee may answer.
    let err = ann
        .accept_friend_request(request.id)
        .await
        .expect_err("not hers");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    let mut a = connect(&ann).await;
    let accepted = bob.accept_friend_request(request.id).await.expect("accept");
    assert_eq!(accepted.status, FriendRequestState::Accepted);
    assert_eq!(accepted.friend.expect("friend").user.id, ann_user.id);
    let news = wait_event(&mut a, "friend_accepted").await;
    assert_eq!(news["friend"]["user"]["id"], json!(bob_user.id));

    let ann_friends = ann.friends().await.expect("friends");
    assert_eq!(
        ann_friends.iter().map(|f| f.user.id).collect::<Vec<_>>(),
        vec![bob_user.id]
    );
    let bob_friends = bob.friends().await.expect("friends");
    assert_eq!(
        bob_friends.iter().map(|f| f.user.id).collect::<Vec<_>>(),
        vec![ann_user.id]
    );
    assert!(bob
        .friend_requests(Direction::Incoming)
        .await
        .expect("answered")
        .is_empty());

    let err = ann
        .send_friend_request(bob_user.id, None)
        .await
        .expect_err("already");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));

    // Unfriending ends it for both; both hear about it.
    ann.unfriend(bob_user.id).await.expect("unfriend");
    let gone = wait_event(&mut a, "friend_removed").await;
    assert_eq!(gone["user_id"], json!(bob_user.id));
    assert!(bob.friends().await.expect("friends").is_empty());
    let err = ann.unfriend(bob_user.id).await.expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn crossing_requests_make_friends_and_declines_are_quiet() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;

    // Bob asks Ann; Ann asks Bob instead of accepting: both are friends.
    bob.send_friend_request(ann_user.id, None)
        .await
        .expect("bob asks");
    let crossed = ann
        .send_friend_request(bob_user.id, None)
        .await
        .expect("ann asks");
    assert_eq!(crossed.status, FriendRequestState::Accepted);
    assert_eq!(crossed.friend.expect("friend").user.id, bob_user.id);
    assert_eq!(bob.friends().await.expect("friends").len(), 1);
    assert!(ann
        .friend_requests(Direction::Incoming)
        .await
        .expect("none")
        .is_empty());
    assert!(bob
        .friend_requests(Direction::Outgoing)
        .await
        .expect("none")
        .is_empty());

    // Cat asks Ann, Ann declines: the request disappears for both, no
    // friendship, and Cat may ask again later.
    let req = cat
        .send_friend_request(ann_user.id, None)
        .await
        .expect("cat asks");
    let id = req.request.expect("pending").id;
    ann.decline_friend_request(id).await.expect("decline");
    assert!(cat
        .friend_requests(Direction::Outgoing)
        .await
        .expect("gone")
        .is_empty());
    assert!(ann
        .friends()
        .await
        .expect("friends")
        .iter()
        .all(|f| f.user.id != cat_user.id));
    let err = ann.decline_friend_request(id).await.expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let again = cat
        .send_friend_request(ann_user.id, None)
        .await
        .expect("again");
    assert_eq!(again.status, FriendRequestState::Pending);

    // Cat withdraws it.
    cat.cancel_friend_request(again.request.expect("pending").id)
        .await
        .expect("cancel");
    assert!(ann
        .friend_requests(Direction::Incoming)
        .await
        .expect("none")
        .is_empty());

    let err = ann
        .send_friend_request(ann_user.id, None)
        .await
        .expect_err("self");
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    let err = ann
        .send_friend_request(987_654, None)
        .await
        .expect_err("nobody");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn pending_requests_are_capped() {
    let app = spawn_app_with(|c| c.chat.max_pending_friend_requests = 2).await;
    let (ann, _) = app.user("ann").await;
    let mut targets = Vec::new();
    for name in ["bob", "cat", "dan"] {
        targets.push(app.user(name).await.1);
    }
    ann.send_friend_request(targets[0].id, None)
        .await
        .expect("first");
    ann.send_friend_request(targets[1].id, None)
        .await
        .expect("second");
    let err = ann
        .send_friend_request(targets[2].id, None)
        .await
        .expect_err("third");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
}

#[tokio::test]
async fn blocking_stops_messages_requests_presence_and_typing_and_ends_friendship() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;

    // Friends with a conversation and a group in common.
    bob.send_friend_request(ann_user.id, None)
        .await
        .expect("ask");
    ann.send_friend_request(bob_user.id, None)
        .await
        .expect("accept by crossing");
    let conv = direct(&bob, &ann_user).await;
    let group = ann
        .create_group("trio", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    bob.send_http(
        conv.id,
        "before-block",
        MessageKind::Text,
        json!({"text": "hello"}),
    )
    .await
    .expect("send before block");

    let mut b = connect(&bob).await;
    ann.block(bob_user.id).await.expect("block");
    assert_eq!(
        ann.blocked_users()
            .await
            .expect("blocks")
            .iter()
            .map(|u| u.id)
            .collect::<Vec<_>>(),
        vec![bob_user.id]
    );
    wait_event(&mut b, "friend_removed").await;
    assert!(
        ann.friends().await.expect("friends").is_empty(),
        "blocking ends the friendship"
    );
    assert!(bob.friends().await.expect("friends").is_empty());

    // Bob can no longer message Ann directly, over HTTP or WebSocket; nothing is stored.
    let err = bob
        .send_http(
            conv.id,
            "after-block",
            MessageKind::Text,
            json!({"text": "hey?"}),
        )
        .await
        .expect_err("blocked");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    let err = b
        .send_text(conv.id, "hello??")
        .await
        .expect_err("blocked over ws");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    // Nor can Ann message Bob while she blocks him.
    let err = ann
        .send_http(
            conv.id,
            "ann-after-block",
            MessageKind::Text,
            json!({"text": "x"}),
        )
        .await
        .expect_err("blocker too");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    let page = ann
        .history(conv.id, Default::default())
        .await
        .expect("history");
    assert_eq!(page.messages.len(), 1, "nothing after the block was stored");

    // No friend requests either way.
    let err = bob
        .send_friend_request(ann_user.id, None)
        .await
        .expect_err("request");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    let err = ann
        .send_friend_request(bob_user.id, None)
        .await
        .expect_err("request");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    // Nor a new direct conversation started by the blocked user.
    let (dan, _) = app.user("dan").await;
    dan.block(bob_user.id).await.expect("dan blocks bob");
    let err = bob
        .direct_conversation(dan.session().expect("s").user.id)
        .await
        .expect_err("new direct");
    assert_eq!(err.code(), Some(ErrorCode::Blocked));

    // In the shared group Bob still talks, but does not see Ann typing,
    // while Cat does.
    let a = connect(&ann).await;
    let mut c = connect(&cat).await;
    a.typing(group.id, confab_sdk::TypingState::Start)
        .await
        .expect("typing");
    c.wait_for(
        WAIT,
        |e| matches!(e, Event::Typing { user_id, .. } if *user_id == ann_user.id),
    )
    .await
    .expect("cat sees ann typing");
    b.send_text(group.id, "group still works")
        .await
        .expect("group send");
    // Bob's stream: his own group message arrives, no typing from Ann before it.
    let seen = b
        .wait_for(WAIT, |e| matches!(e, Event::Message(m) if m.conversation_id == group.id && m.sender_id == bob_user.id)
            || matches!(e, Event::Typing { user_id, .. } if *user_id == ann_user.id))
        .await
        .expect("bob's own message");
    assert!(
        matches!(seen, Event::Message(_)),
        "bob saw ann typing: {seen:?}"
    );

    // Presence: Bob is no friend any more, so Ann's going offline is not
    // announced to him, and he cannot list her.
    a.close().await;
    let seen = b
        .wait_for(
            std::time::Duration::from_millis(500),
            |e| matches!(e, Event::Presence { user_id, .. } if *user_id == ann_user.id),
        )
        .await;
    assert!(seen.is_err(), "bob got ann's presence: {seen:?}");

    // Unblocking restores none of it automatically.
    ann.unblock(bob_user.id).await.expect("unblock");
    assert!(ann.blocked_users().await.expect("blocks").is_empty());
    assert!(
        ann.friends().await.expect("friends").is_empty(),
        "no friendship back"
    );
    bob.send_http(
        conv.id,
        "after-unblock",
        MessageKind::Text,
        json!({"text": "hi again"}),
    )
    .await
    .expect("messages flow again");
    let err = ann.unblock(bob_user.id).await.expect_err("twice");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn friends_only_policy_refuses_strangers() {
    let app =
        spawn_app_with(|c| c.chat.direct_messages = confab_server::config::DirectMessages::Friends)
            .await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let (cat, cat_user) = app.user("cat").await;

    let err = bob
        .direct_conversation(ann_user.id)
        .await
        .expect_err("stranger");
    assert_eq!(err.code(), Some(ErrorCode::NotFriends));

    bob.send_friend_request(ann_user.id, None)
        .await
        .expect("ask");
    ann.send_friend_request(bob_user.id, None)
        .await
        .expect("accept");
    let conv = direct(&bob, &ann_user).await;
    bob.send_http(
        conv.id,
        "f1",
        MessageKind::Text,
        json!({"text": "friends now"}),
    )
    .await
    .expect("friends may message");

    // A conversation made while friends refuses sends once they are not.
    ann.unfriend(bob_user.id).await.expect("unfriend");
    let err = bob
        .send_http(
            conv.id,
            "f2",
            MessageKind::Text,
            json!({"text": "still there?"}),
        )
        .await
        .expect_err("not friends any more");
    assert_eq!(err.code(), Some(ErrorCode::NotFriends));

    // Groups are not direct messages.
    let group = cat
        .create_group("open", &[ann_user.id, bob_user.id])
        .await
        .expect("group");
    cat.send_http(group.id, "g1", MessageKind::Text, json!({"text": "hi all"}))
        .await
        .expect("group messages flow");
    let _ = cat_user;
}
