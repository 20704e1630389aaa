//! Tests of the outbox: order, acks, refusals, retries and reconnects.

use std::time::Duration;

use super::*;
use serde_json::json;

fn out(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        client_msg_id: id.to_owned(),
        conversation_id: 7,
        kind: MessageKind::Text,
        body: json!({"text": id}),
    }
}

fn ids(frames: &[ClientFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            ClientFrame::Send { client_msg_id, .. } => client_msg_id.clone(),
            other => panic!("not a send: {other:?}"),
        })
        .collect()
}

fn filled(names: &[&str]) -> Outbox<&'static str> {
    let mut ob = Outbox::default();
    for n in names {
        assert!(ob.push(out(n), "w"));
    }
    ob
}

#[test]
fn reconnect_resends_everything_in_send_order() {
    let mut ob = filled(&["a", "b", "c", "d"]);
    assert_eq!(ids(&ob.on_connected()), ["a", "b", "c", "d"]);
    assert!(ob.ack("b").is_some());
    ob.on_disconnected();
    assert_eq!(ids(&ob.on_connected()), ["a", "c", "d"]);
    assert_eq!(ob.len(), 3);
}

#[test]
fn ack_removes_once_and_returns_the_message() {
    let mut ob = filled(&["a", "b"]);
    let (msg, waiters) = ob.ack("a").expect("pending");
    assert_eq!(msg, out("a"));
    assert_eq!(waiters, ["w"]);
    assert!(ob.ack("a").is_none(), "a repeated ack is ignored");
    assert!(ob.ack("zzz").is_none());
    assert!(!ob.contains("a"));
    assert!(ob.contains("b"));
    assert_eq!(ob.len(), 1);
}

#[test]
fn same_id_twice_shares_one_entry() {
    let mut ob: Outbox<u32> = Outbox::default();
    assert!(ob.push(out("a"), 1));
    assert!(!ob.push(out("a"), 2));
    assert_eq!(ob.len(), 1);
    assert_eq!(ob.fail("a"), Some(vec![1, 2]));
    assert_eq!(ob.len(), 0);
}

#[test]
fn deferred_messages_come_back_when_due_in_send_order() {
    let now = Instant::now();
    let mut ob = filled(&["a", "b", "c"]);
    ob.on_connected();
    let mut seen_attempts = Vec::new();
    assert!(ob.defer("c", |n| {
        seen_attempts.push(n);
        now + Duration::from_millis(10)
    }));
    assert!(ob.defer("a", |n| {
        seen_attempts.push(n);
        now + Duration::from_millis(20)
    }));
    assert!(!ob.defer("nope", |_| now));
    assert_eq!(ob.next_retry(), Some(now + Duration::from_millis(10)));
    assert!(ob.take_due(now).is_empty());
    assert_eq!(
        ids(&ob.take_due(now + Duration::from_millis(30))),
        ["a", "c"]
    );
    assert_eq!(ob.next_retry(), None);

    // A second refusal counts as a second attempt.
    assert!(ob.defer("a", |n| {
        seen_attempts.push(n);
        now
    }));
    assert_eq!(seen_attempts, [0, 0, 1]);
    // An ack of a deferred message also cancels its retry.
    assert!(ob.ack("a").is_some());
    assert_eq!(ob.next_retry(), None);
}

#[test]
fn reconnect_cancels_retry_timers() {
    let now = Instant::now();
    let mut ob = filled(&["a", "b"]);
    ob.on_connected();
    ob.defer("b", |_| now + Duration::from_secs(60));
    ob.on_disconnected();
    assert_eq!(ob.next_retry(), None);
    assert_eq!(ids(&ob.on_connected()), ["a", "b"]);
}

#[test]
fn drain_returns_every_waiter_and_empties() {
    let mut ob: Outbox<u32> = Outbox::default();
    ob.push(out("a"), 1);
    ob.push(out("b"), 2);
    ob.push(out("a"), 3);
    let mut waiters = ob.drain();
    waiters.sort_unstable();
    assert_eq!(waiters, [1, 2, 3]);
    assert_eq!(ob.len(), 0);
    assert!(ob.on_connected().is_empty());
}

#[test]
fn mark_in_flight_only_touches_queued_entries() {
    let now = Instant::now();
    let mut ob = filled(&["a"]);
    ob.mark_in_flight("a");
    ob.defer("a", |_| now);
    ob.mark_in_flight("a");
    assert_eq!(ids(&ob.take_due(now)), ["a"], "still deferred after mark");
    ob.mark_in_flight("unknown");
}
