//! `NatsBus` and `NatsPresence` against private nats-servers (testkit): two
//! instances in one process stand for two nodes of a cluster.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_bus::{
    Bus, BusError, Delivery, DeliverySink, NatsBus, NatsBusOptions, NatsPresence,
    NatsPresenceOptions, Presence, Priority, FANOUT_PER_USER_MAX,
};
use confab_proto::UserId;
use confab_testkit::nats::Nats;
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

/// Records every delivery a node's bus hands over.
#[derive(Default)]
struct Recorder(Mutex<Vec<Delivery>>);

impl DeliverySink for Recorder {
    fn deliver(&self, d: &Delivery) {
        self.0.lock().expect("lock").push(d.clone());
    }
}

impl Recorder {
    fn all(&self) -> Vec<Delivery> {
        self.0.lock().expect("lock").clone()
    }

    fn frames(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|d| String::from_utf8_lossy(&d.frame).into_owned())
            .collect()
    }

    /// Frames other than `settle`'s markers.
    fn payloads(&self) -> Vec<String> {
        let mut f = self.frames();
        f.retain(|f| !f.starts_with("marker-"));
        f
    }

    fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    fn clear(&self) {
        self.0.lock().expect("lock").clear();
    }
}

async fn nats() -> Nats {
    Nats::start().await.expect("start a private nats-server")
}

async fn node(url: &str, id: &str) -> (NatsBus, Arc<Recorder>) {
    node_with(url, id, NatsBusOptions::default()).await
}

async fn node_with(url: &str, id: &str, options: NatsBusOptions) -> (NatsBus, Arc<Recorder>) {
    let bus = NatsBus::connect_with(url, id, options)
        .await
        .expect("connect");
    let rec = Arc::new(Recorder::default());
    bus.attach(rec.clone());
    wait_until("bus ready", || bus.is_ready()).await;
    // The fan-out subscription went out before the barrier's request.
    bus.barrier().await.expect("barrier");
    (bus, rec)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn delivery(users: Vec<UserId>, frame: impl Into<String>) -> Delivery {
    Delivery {
        users: Arc::from(users),
        skip_user: None,
        skip_connection: None,
        priority: Priority::Message,
        frame: Bytes::from(frame.into()),
    }
}

/// Publishes a marker from `from` to `user` and waits until `rec` has it:
/// everything `from` published to `user` before has arrived by then.
async fn settle(from: &NatsBus, rec: &Recorder, user: UserId) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let marker = format!("marker-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    from.publish(delivery(vec![user], marker.clone()))
        .await
        .expect("publish marker");
    wait_until("marker", || rec.frames().contains(&marker)).await;
}

#[tokio::test]
async fn deliveries_reach_only_the_interested_node() {
    let nats = nats().await;
    let (a, rec_a) = node(&nats.url(), "a").await;
    let (b, rec_b) = node(&nats.url(), "b").await;
    b.set_interest(7, true).await.expect("interest");
    a.set_interest(8, true).await.expect("interest");

    a.publish(delivery(vec![7], "for-7"))
        .await
        .expect("publish");
    b.publish(delivery(vec![7, 8], "for-7-and-8"))
        .await
        .expect("publish");
    wait_until("b's deliveries", || rec_b.len() == 2).await;
    wait_until("a's delivery", || rec_a.len() == 1).await;
    let got_b = rec_b.all();
    // Two publishers: NATS orders per publisher, not across them.
    let mut frames_b = rec_b.frames();
    frames_b.sort();
    assert_eq!(frames_b, ["for-7", "for-7-and-8"]);
    assert!(got_b.iter().all(|d| *d.users == [7]), "b only hears of 7");
    assert_eq!(rec_a.frames(), ["for-7-and-8"]);
    assert_eq!(&*rec_a.all()[0].users, [8]);

    // Interest withdrawn: nothing more for 7 on b.
    b.set_interest(7, false).await.expect("no interest");
    rec_b.clear();
    a.publish(delivery(vec![7], "late")).await.expect("publish");
    b.set_interest(9, true).await.expect("interest");
    settle(&a, &rec_b, 9).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rec_b.payloads().is_empty(), "{:?}", rec_b.frames());

    // Interest again: deliveries resume, once each.
    b.set_interest(7, true).await.expect("interest");
    b.set_interest(7, true).await.expect("idempotent");
    rec_b.clear();
    a.publish(delivery(vec![7], "again"))
        .await
        .expect("publish");
    settle(&a, &rec_b, 7).await;
    assert_eq!(rec_b.payloads(), ["again"]);
}

#[tokio::test]
async fn large_deliveries_are_published_once_and_split_by_node() {
    let nats = nats().await;
    let (a, rec_a) = node(&nats.url(), "a").await;
    let (b, rec_b) = node(&nats.url(), "b").await;
    let users: Vec<UserId> = (1..=100).collect();
    assert!(users.len() > FANOUT_PER_USER_MAX);
    for &u in &users {
        if u <= 50 {
            a.set_interest(u, true).await.expect("interest");
        } else {
            b.set_interest(u, true).await.expect("interest");
        }
    }
    // Watch the wire: one message for the whole delivery.
    let spy = async_nats::connect(nats.url()).await.expect("spy");
    let mut wire = spy.subscribe("confab.>").await.expect("spy subscribe");
    spy.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut d = delivery(users.clone(), "big");
    d.skip_user = Some(3);
    d.skip_connection = Some(0xABCD_0000_0000_0042);
    d.priority = Priority::Bulk;
    a.publish(d).await.expect("publish");

    wait_until("both nodes", || rec_a.len() == 1 && rec_b.len() == 1).await;
    for (rec, range) in [(&rec_a, 1..=50), (&rec_b, 51..=100)] {
        let got = &rec.all()[0];
        assert_eq!(&*got.users, range.collect::<Vec<_>>().as_slice());
        assert_eq!(got.skip_user, Some(3));
        assert_eq!(got.skip_connection, Some(0xABCD_0000_0000_0042));
        assert_eq!(got.priority, Priority::Bulk);
        assert_eq!(&got.frame[..], b"big");
    }
    let first = tokio::time::timeout(WAIT, wire.next())
        .await
        .expect("on the wire")
        .expect("message");
    assert_eq!(first.subject.as_str(), confab_bus::FANOUT_SUBJECT);
    let more = tokio::time::timeout(Duration::from_millis(300), wire.next()).await;
    assert!(more.is_err(), "one publish only: {more:?}");

    // A node none of whose users are in the list delivers nothing.
    rec_a.clear();
    rec_b.clear();
    a.publish(delivery((51..=150).collect(), "b-only"))
        .await
        .expect("publish");
    wait_until("b", || rec_b.len() == 1).await;
    settle(&b, &rec_a, 1).await;
    assert!(rec_a.payloads().is_empty(), "{:?}", rec_a.frames());
}

#[tokio::test]
async fn skip_fields_and_priority_survive() {
    let nats = nats().await;
    let (a, _rec_a) = node(&nats.url(), "a").await;
    let (b, rec_b) = node(&nats.url(), "b").await;
    b.set_interest(7, true).await.expect("interest");
    b.set_interest(8, true).await.expect("interest");
    let mut d = delivery(vec![7], "typing");
    d.skip_user = Some(5);
    d.skip_connection = Some(u64::MAX);
    d.priority = Priority::Control;
    a.publish(d).await.expect("publish");
    // The skipped user's own subject gets nothing.
    let mut d = delivery(vec![7, 8], "not-to-8");
    d.skip_user = Some(8);
    a.publish(d).await.expect("publish");
    wait_until("deliveries", || rec_b.len() == 2).await;
    let got = rec_b.all();
    assert_eq!(&*got[0].users, [7]);
    assert_eq!(got[0].skip_user, Some(5));
    assert_eq!(got[0].skip_connection, Some(u64::MAX));
    assert_eq!(got[0].priority, Priority::Control);
    assert_eq!(&*got[1].users, [7]);
    assert_eq!(got[1].skip_user, Some(8));
    assert_eq!(got[1].skip_connection, None);
    assert_eq!(got[1].priority, Priority::Message);
    settle(&a, &rec_b, 8).await;
    assert_eq!(rec_b.payloads(), ["typing", "not-to-8"]);
}

#[tokio::test]
async fn order_of_a_thousand_deliveries_is_kept() {
    let nats = nats().await;
    let (a, _rec_a) = node(&nats.url(), "a").await;
    let (b, rec_b) = node(&nats.url(), "b").await;
    b.set_interest(7, true).await.expect("interest");
    for i in 0..1000 {
        a.publish(delivery(vec![7], i.to_string()))
            .await
            .expect("publish");
    }
    wait_until("1000 deliveries", || rec_b.len() == 1000).await;
    let expected: Vec<String> = (0..1000).map(|i: i32| i.to_string()).collect();
    assert_eq!(rec_b.frames(), expected);

    // Concurrent publishers: each one's order survives.
    rec_b.clear();
    let a = Arc::new(a);
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let a = a.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    a.publish(delivery(vec![7], format!("{t}:{i}")))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    wait_until("1000 more", || rec_b.len() == 1000).await;
    for t in 0..4 {
        let mine: Vec<String> = rec_b
            .frames()
            .into_iter()
            .filter(|f| f.starts_with(&format!("{t}:")))
            .collect();
        let expected: Vec<String> = (0..250).map(|i| format!("{t}:{i}")).collect();
        assert_eq!(mine, expected);
    }
}

#[tokio::test]
async fn garbage_on_the_subjects_is_dropped() {
    let nats = nats().await;
    let (a, rec_a) = node(&nats.url(), "a").await;
    a.set_interest(7, true).await.expect("interest");
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        vec![0xCF],
        vec![0xCF, 1, 1],
        vec![0xCF, 1, 7, 0],       // unknown priority
        vec![0xCF, 1, 1, 0x10],    // unknown flag
        vec![0xCF, 9, 1, 0],       // unknown version
        vec![0xCF, 1, 1, 1, 0, 0], // truncated skip_user
        vec![
            0xCF, 1, 1, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 7,
        ],
        vec![0xCF, 1, 1, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7], // list on a user subject
        vec![0xCF, 1, 1, 0],                                     // no list on fan-out
    ];
    for j in &junk {
        for subject in ["confab.u.7", confab_bus::FANOUT_SUBJECT] {
            raw.publish(subject, Bytes::from(j.clone()))
                .await
                .expect("raw publish");
        }
    }
    // A well-formed fan-out message from a foreign publisher works.
    raw.publish(
        confab_bus::FANOUT_SUBJECT,
        Bytes::from_static(&[
            0xCF, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, b'o', b'k',
        ]),
    )
    .await
    .expect("raw publish");
    raw.flush().await.expect("flush");
    settle(&a, &rec_a, 7).await;
    // What decodes: the header-only message on the user subject and the
    // one-user list on the fan-out subject (empty frames), and "ok".
    let mut frames = rec_a.payloads();
    frames.sort();
    assert_eq!(frames, ["", "", "ok"]);
    for d in rec_a.all() {
        assert_eq!(&*d.users, [7]);
    }
    assert!(a.is_ready());
}

#[tokio::test]
async fn survives_a_nats_restart() {
    let mut nats = nats().await;
    let (a, _rec_a) = node(&nats.url(), "a").await;
    let (b, rec_b) = node(&nats.url(), "b").await;
    b.set_interest(7, true).await.expect("interest");
    let reconnects = b.reconnects();
    assert_eq!(*reconnects.borrow(), 0);
    settle(&a, &rec_b, 7).await;

    nats.stop().await;
    wait_until("a not ready", || !a.is_ready()).await;
    wait_until("b not ready", || !b.is_ready()).await;
    // While disconnected: publish never stalls; interest is recorded and
    // its subscription made once NATS is back.
    let started = Instant::now();
    let _ = a.publish(delivery(vec![7], "during")).await;
    let _ = b.set_interest(8, true).await;
    // Generous: this tells "fails fast" from "waits for a timeout" (tens of
    // seconds), without failing on a slow machine.
    assert!(started.elapsed() < Duration::from_secs(5));

    let down_since = Instant::now();
    nats.start_again().await;
    wait_until("a ready", || a.is_ready()).await;
    wait_until("b ready", || b.is_ready()).await;
    eprintln!("reconnected {:?} after restart", down_since.elapsed());
    wait_until("reconnect counted", || *reconnects.borrow() == 1).await;
    assert_eq!(*a.reconnects().borrow(), 1);

    // Subscriptions are back (the old one restored by the client, the new
    // one made after the reconnect): deliveries flow again.
    for user in [7, 8] {
        let deadline = Instant::now() + WAIT;
        let frame = format!("after-{user}");
        loop {
            a.publish(delivery(vec![user], frame.clone()))
                .await
                .expect("publish");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if rec_b.frames().contains(&frame) {
                break;
            }
            assert!(Instant::now() < deadline, "no delivery for {user}");
        }
    }
    // Fan-out too.
    rec_b.clear();
    a.publish(delivery((1..=100).collect(), "big-after"))
        .await
        .expect("publish");
    wait_until("fan-out after restart", || {
        rec_b.frames().contains(&"big-after".to_owned())
    })
    .await;
    let got = rec_b.all();
    let big = got
        .iter()
        .find(|d| &d.frame[..] == b"big-after")
        .expect("delivery");
    assert_eq!(&*big.users, [7, 8]);
}

#[tokio::test]
async fn publish_fails_fast_when_disconnected_and_the_buffer_is_full() {
    let mut nats = nats().await;
    let options = NatsBusOptions {
        client_capacity: 16,
        ..Default::default()
    };
    let (a, _rec) = node_with(&nats.url(), "a", options).await;
    nats.stop().await;
    wait_until("not ready", || !a.is_ready()).await;
    let started = Instant::now();
    let mut failed = 0;
    for i in 0..100 {
        match a.publish(delivery(vec![7], i.to_string())).await {
            Ok(()) => {}
            Err(BusError::Unavailable(_)) => failed += 1,
        }
    }
    assert!(failed > 0, "a full buffer refuses");
    // Generous: this tells "fails fast" from "waits for a timeout" (tens of
    // seconds), without failing on a slow machine.
    assert!(started.elapsed() < Duration::from_secs(5));
    nats.start_again().await;
    wait_until("ready", || a.is_ready()).await;
    a.publish(delivery(vec![7], "after"))
        .await
        .expect("publish");
}

async fn presence(nats: &Nats, node: &str, ttl: Duration) -> NatsPresence {
    NatsPresence::connect(&nats.url(), node, ttl)
        .await
        .expect("presence")
}

#[tokio::test]
async fn presence_transitions_happen_once_across_nodes() {
    let nats = nats().await;
    let p1 = presence(&nats, "one", Duration::from_secs(2)).await;
    let p2 = presence(&nats, "two", Duration::from_secs(2)).await;

    assert!(p1.node_online(7).await.expect("online"));
    assert!(!p1.node_online(7).await.expect("again"), "idempotent");
    assert!(!p2.node_online(7).await.expect("second node"));
    assert_eq!(p2.online(&[7, 8]).await.expect("q"), HashSet::from([7]));
    assert_eq!(p1.online(&[7, 8]).await.expect("q"), HashSet::from([7]));
    assert!(!p1.node_offline(7).await.expect("first leaves"));
    assert!(!p1.node_offline(7).await.expect("again"));
    assert_eq!(p1.online(&[7]).await.expect("q"), HashSet::from([7]));
    assert!(p2.node_offline(7).await.expect("last leaves"));
    assert!(p1.online(&[7]).await.expect("q").is_empty());
    assert!(p2.online(&[7]).await.expect("q").is_empty());

    // Races: exactly one node sees the first connection and one the last.
    let (p1, p2) = (Arc::new(p1), Arc::new(p2));
    for user in 100..130 {
        let (a, b) = tokio::join!(p1.node_online(user), p2.node_online(user));
        let firsts = [a.expect("a"), b.expect("b")];
        assert_eq!(firsts.iter().filter(|x| **x).count(), 1, "user {user}");
        let (a, b) = tokio::join!(p1.node_offline(user), p2.node_offline(user));
        let lasts = [a.expect("a"), b.expect("b")];
        assert_eq!(lasts.iter().filter(|x| **x).count(), 1, "user {user}");
    }
    // Shares a connection with the bus too.
    let (bus, _rec) = node(&nats.url(), "three").await;
    let p3 = NatsPresence::new(
        bus.client(),
        "three",
        NatsPresenceOptions::with_ttl(Duration::from_secs(2)),
    )
    .await
    .expect("presence on the bus connection");
    assert!(p3.node_online(200).await.expect("online"));
    assert!(!p1.node_online(200).await.expect("online"));
}

#[tokio::test]
async fn presence_outlives_the_ttl_while_heartbeats_go_on() {
    let nats = nats().await;
    let ttl = Duration::from_secs(2);
    let p1 = presence(&nats, "one", ttl).await;
    let p2 = presence(&nats, "two", ttl).await;
    assert!(p1.node_online(7).await.expect("online"));
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(p2.online(&[7]).await.expect("q"), HashSet::from([7]));
    assert!(!p2.node_online(7).await.expect("still online via p1"));
}

#[tokio::test]
async fn a_dead_nodes_users_go_offline_within_the_ttl() {
    let nats = nats().await;
    let ttl = Duration::from_secs(2);
    let p1 = presence(&nats, "one", ttl).await;
    let p2 = presence(&nats, "two", ttl).await;
    assert!(p1.node_online(7).await.expect("online"));
    assert!(p1.node_online(8).await.expect("online"));
    assert_eq!(p2.online(&[7, 8]).await.expect("q"), HashSet::from([7, 8]));

    let died = Instant::now();
    drop(p1); // no more heartbeats
    loop {
        if p2.online(&[7, 8]).await.expect("q").is_empty() {
            break;
        }
        assert!(died.elapsed() < WAIT, "still online long after the ttl");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = died.elapsed();
    eprintln!("offline {gone:?} after the node died (ttl {ttl:?})");
    // Not a timing check: the entries must expire by themselves; how soon
    // (about the ttl) is printed above.
    assert!(
        gone >= ttl / 2,
        "offline before the ttl could have run out: {gone:?}"
    );
    // The user comes online afresh on another node.
    assert!(p2.node_online(7).await.expect("online"));

    // A node that shuts down cleanly behaves the same.
    let p3 = presence(&nats, "three", ttl).await;
    assert!(p3.node_online(9).await.expect("online"));
    assert_eq!(p2.online(&[9]).await.expect("q"), HashSet::from([9]));
    p3.shutdown().await;
    let stopped = Instant::now();
    wait_until_async(|| async { p2.online(&[9]).await.expect("q").is_empty() }).await;
    eprintln!("offline {:?} after a clean shutdown", stopped.elapsed());
}

async fn wait_until_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn presence_heals_after_a_nats_outage() {
    let mut nats = nats().await;
    let ttl = Duration::from_secs(2);
    let p1 = presence(&nats, "one", ttl).await;
    let p2 = presence(&nats, "two", ttl).await;
    assert!(p1.node_online(7).await.expect("online"));
    assert!(p1.node_online(8).await.expect("online"));

    nats.stop().await;
    wait_until("disconnected", || !p1.is_ready() && !p2.is_ready()).await;
    // Calls fail fast while NATS is away, but what they report is kept.
    let started = Instant::now();
    assert!(p1.node_offline(8).await.is_err());
    assert!(p1.node_online(9).await.is_err());
    assert!(p2.online(&[7]).await.is_err());
    // Generous: this tells "fails fast" from "waits for a timeout" (tens of
    // seconds), without failing on a slow machine.
    assert!(started.elapsed() < Duration::from_secs(5));
    // Longer than the TTL: p1's heartbeat expires meanwhile.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    nats.start_again().await;

    let back = Instant::now();
    wait_until_async(|| async {
        matches!(p2.online(&[7, 8, 9]).await, Ok(set) if set == HashSet::from([7, 9]))
    })
    .await;
    eprintln!("presence healed {:?} after NATS came back", back.elapsed());
    assert!(!p2.node_online(9).await.expect("online elsewhere"));
    assert!(p2
        .node_online(8)
        .await
        .expect("8 left p1 during the outage"));
}
