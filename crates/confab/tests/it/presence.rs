//! Presence (online while any device is connected, offline with last_seen
//! after the last one goes or times out, hidden on request) and typing
//! (relayed on change, ends by itself), against the real server.

use std::time::Duration;

use crate::support::*;
use confab_sdk::proto::api::{PresenceStatus, UpdateProfileRequest};
use confab_sdk::{Client, Event, TypingState, User};

/// Waits for a presence frame about `user` with `status`.
async fn wait_presence(
    conn: &mut confab_sdk::Connection,
    user: &User,
    status: &str,
) -> Option<i64> {
    match conn
        .wait_for(WAIT, |e| {
            matches!(e, Event::Presence { user_id, status: s, .. } if *user_id == user.id && s.as_str() == status)
        })
        .await
    {
        Ok(Event::Presence { last_seen, .. }) => last_seen,
        other => panic!("waiting for {} {status}: {other:?}", user.username),
    }
}

async fn friend_status(client: &Client, user: &User) -> (PresenceStatus, Option<i64>) {
    let friends = client.friends().await.expect("friends");
    let f = friends
        .iter()
        .find(|f| f.user.id == user.id)
        .expect("is a friend");
    (f.status, f.last_seen)
}

#[tokio::test]
async fn online_while_any_device_is_connected_offline_after_the_last() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let ann2 = app.device("ann").await;
    let mut b = connect(&bob).await;
    assert_eq!(
        friend_status(&bob, &ann_user).await,
        (PresenceStatus::Offline, None),
        "never seen yet"
    );

    let a1 = connect(&ann).await;
    wait_presence(&mut b, &ann_user, "online").await;
    let a2 = connect(&ann2).await;
    assert_eq!(
        friend_status(&bob, &ann_user).await.0,
        PresenceStatus::Online
    );

    // One device goes: still online, and nothing is announced.
    a1.close().await;
    let early = b
        .wait_for(Duration::from_millis(500), |e| {
            matches!(e, Event::Presence { .. })
        })
        .await;
    assert!(
        early.is_err(),
        "presence changed with a device still on: {early:?}"
    );
    assert_eq!(
        friend_status(&bob, &ann_user).await.0,
        PresenceStatus::Online
    );

    // The last one goes: offline, with last_seen.
    let before = confab_sdk::proto::ids::Millis::from(0);
    a2.close().await;
    let last_seen = wait_presence(&mut b, &ann_user, "offline").await;
    assert!(last_seen.is_some_and(|t| t > before), "{last_seen:?}");
    assert_eq!(
        friend_status(&bob, &ann_user).await,
        (PresenceStatus::Offline, last_seen)
    );

    // A device connecting later gets every friend's presence right away.
    let _a3 = connect(&ann).await;
    let bob2 = app.device("bob").await;
    let mut b2 = bob2
        .connect(confab_sdk::ConnectOptions::default())
        .expect("connect");
    wait_presence(&mut b2, &ann_user, "online").await;
}

#[tokio::test]
async fn a_silent_connection_times_out_and_goes_offline() {
    let app = spawn_app_with(|c| c.heartbeat_s = 1).await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let mut b = connect(&bob).await;

    // A raw socket that never reads or answers pings.
    let _silent = ann.connect_raw().await.expect("raw connect");
    wait_presence(&mut b, &ann_user, "online").await;
    // Idle limit is three heartbeats (3 s); WAIT is longer.
    let last_seen = wait_presence(&mut b, &ann_user, "offline").await;
    assert!(last_seen.is_some());
}

#[tokio::test]
async fn hidden_presence_shows_offline_without_last_seen() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    befriend(&ann, &bob).await;
    let mut b = connect(&bob).await;
    let a = connect(&ann).await;
    wait_presence(&mut b, &ann_user, "online").await;

    let me = ann
        .update_me(&UpdateProfileRequest {
            hide_presence: Some(true),
            ..Default::default()
        })
        .await
        .expect("hide");
    assert_eq!(me.hide_presence, Some(true));
    assert_eq!(ann.me().await.expect("me").hide_presence, Some(true));
    let last_seen = wait_presence(&mut b, &ann_user, "offline").await;
    assert_eq!(last_seen, None);
    assert_eq!(
        friend_status(&bob, &ann_user).await,
        (PresenceStatus::Offline, None)
    );
    // Others never see the setting.
    assert_eq!(
        bob.user(ann_user.id).await.expect("user").hide_presence,
        None
    );

    // Coming and going while hidden says nothing.
    a.close().await;
    let _a2 = connect(&ann).await;
    let quiet = b
        .wait_for(Duration::from_millis(500), |e| {
            matches!(e, Event::Presence { .. })
        })
        .await;
    assert!(quiet.is_err(), "hidden presence leaked: {quiet:?}");

    // Showing it again announces the current state.
    ann.update_me(&UpdateProfileRequest {
        hide_presence: Some(false),
        ..Default::default()
    })
    .await
    .expect("show");
    wait_presence(&mut b, &ann_user, "online").await;
}

#[tokio::test]
async fn typing_is_relayed_on_change_and_ends_by_itself() {
    let app = spawn_app_with(|c| c.chat.typing_timeout_ms = 400).await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let conv = direct(&ann, &bob_user).await;
    let a = connect(&ann).await;
    let mut b = connect(&bob).await;
    let mut a_other = connect(&app.device("ann").await).await;

    let is_typing = |want: TypingState| move |e: &Event| matches!(e, Event::Typing { user_id, state, .. } if *user_id == ann_user.id && *state == want);

    // Start, refreshed twice within the timeout: one start, then one stop
    // only after the last refresh has run out.
    a.typing(conv.id, TypingState::Start).await.expect("start");
    b.wait_for(WAIT, is_typing(TypingState::Start))
        .await
        .expect("bob sees start");
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        a.typing(conv.id, TypingState::Start)
            .await
            .expect("refresh");
    }
    let next = b
        .wait_for(WAIT, |e| matches!(e, Event::Typing { .. }))
        .await
        .expect("stop by itself");
    assert!(
        matches!(
            next,
            Event::Typing {
                state: TypingState::Stop,
                ..
            }
        ),
        "a refresh was relayed again: {next:?}"
    );

    // An explicit stop is relayed once.
    a.typing(conv.id, TypingState::Start).await.expect("start");
    b.wait_for(WAIT, is_typing(TypingState::Start))
        .await
        .expect("start");
    a.typing(conv.id, TypingState::Stop).await.expect("stop");
    b.wait_for(WAIT, is_typing(TypingState::Stop))
        .await
        .expect("stop");

    // Closing while typing tells the others.
    a.typing(conv.id, TypingState::Start).await.expect("start");
    b.wait_for(WAIT, is_typing(TypingState::Start))
        .await
        .expect("start");
    a.close().await;
    b.wait_for(WAIT, is_typing(TypingState::Stop))
        .await
        .expect("stop on close");

    // Never echoed to the typist's own devices.
    let echoed = a_other
        .wait_for(Duration::from_millis(300), |e| {
            matches!(e, Event::Typing { .. })
        })
        .await;
    assert!(echoed.is_err(), "typing echoed to own device: {echoed:?}");

    // Typing where one is not a member is refused.
    let (cat, _) = app.user("cat").await;
    let mut c = connect(&cat).await;
    c.typing(conv.id, TypingState::Start).await.expect("sent");
    let err = c
        .wait_for(WAIT, |e| matches!(e, Event::Error(_)))
        .await
        .expect("error");
    assert!(matches!(err, Event::Error(e) if e.code == confab_sdk::ErrorCode::NotFound));
}
