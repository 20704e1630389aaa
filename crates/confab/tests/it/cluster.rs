//! Cluster mode: several `confab serve` processes on one private PostgreSQL
//! and one private NATS (started by the test from the machine's binaries,
//! temp dirs, free ports). Users on different nodes chat, see presence and
//! typing; a node is killed with SIGKILL under traffic; NATS is restarted
//! under traffic; PostgreSQL goes away for a while. The checker verifies,
//! for every acked message, exactly-once in-order delivery to every member
//! device. A device revoked on one node is disconnected on the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use confab_sdk::{
    Client, ConnectOptions, Connection, ConversationId, Event, MessageKind, Seq, User,
};
use confab_testkit::{Nats, Postgres};
use serde_json::json;

/// A private cluster.
struct Cluster {
    pg: Postgres,
    nats: Nats,
    nodes: Vec<Option<ServerProcess>>,
    urls: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// `n` nodes with `extra` flags each.
    async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let pg = Postgres::start().await.expect("private postgres");
        let nats = Nats::start().await.expect("private nats-server");
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            let node_id = format!("node-{i}");
            let (pg_url, nats_url) = (pg.url(), nats.url());
            let mut flags = vec![
                "--database",
                &pg_url,
                "--bus",
                &nats_url,
                "--node-id",
                &node_id,
                "--heartbeat-s",
                "2",
            ];
            flags.extend_from_slice(extra);
            let node = spawn_binary_with(dir.path(), &flags).await;
            urls.push(node.base_url.clone());
            nodes.push(Some(node));
            dirs.push(dir);
        }
        let cluster = Cluster {
            pg,
            nats,
            nodes,
            urls,
            _dirs: dirs,
        };
        for i in 0..n {
            cluster.wait_ready(i, true).await;
        }
        cluster
    }

    /// Waits until node `i`'s `/readyz` says `ready`.
    async fn wait_ready(&self, i: usize, ready: bool) {
        let url = format!("{}/readyz", self.urls[i]);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = matches!(http.get(&url).send().await, Ok(r) if r.status().is_success());
            if ok == ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} never became {}",
                if ready { "ready" } else { "unready" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers on node 0 and logs in on node `node`, with every other
    /// node to fail over to.
    async fn user(&self, name: &str, node: usize) -> (Client, User) {
        Client::new(&self.urls[0])
            .register(name, PASSWORD, None)
            .await
            .expect("register");
        let n = self.urls.len();
        let order: Vec<&String> = (0..n).map(|k| &self.urls[(node + k) % n]).collect();
        let client = Client::with_servers(&order);
        let session = client
            .login(name, PASSWORD, Some("cluster test"))
            .await
            .expect("login");
        (client, session.user)
    }

    /// A connection that fails over to every other node (the client knows
    /// them all).
    fn connect(&self, client: &Client) -> Connection {
        client.connect(ConnectOptions::default()).expect("connect")
    }

    async fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.child.kill().await.expect("kill -9");
        }
    }
}

async fn synced(mut c: Connection) -> Connection {
    c.wait_synced(WAIT).await.expect("synced");
    c
}

#[tokio::test]
async fn users_on_different_nodes_chat_and_see_presence_and_typing() {
    let cluster = Cluster::start(3).await;
    let (ann, ann_user) = cluster.user("ann", 0).await;
    let (bob, bob_user) = cluster.user("bob", 1).await;
    let (cat, cat_user) = cluster.user("cat", 2).await;
    befriend(&ann, &bob).await;

    let mut a = synced(cluster.connect(&ann)).await;
    let mut b = cluster.connect(&bob);
    // Bob's connection on node 1 is announced to Ann on node 0.
    a.wait_for(WAIT, |e| {
        matches!(e, Event::Presence { user_id, status, .. } if *user_id == bob_user.id && *status == confab_sdk::PresenceStatus::Online)
    })
    .await
    .expect("ann sees bob online across nodes");
    b.wait_synced(WAIT).await.expect("bob synced");

    // Direct chat across nodes, both ways.
    let conv = ann.direct_conversation(bob_user.id).await.expect("direct");
    let ack = a
        .send_text(conv.id, "hello from node 0")
        .await
        .expect("send");
    let got = b.next_message(WAIT).await.expect("bob receives");
    assert_eq!((got.seq, got.sender_id), (ack.seq, ann_user.id));
    b.send_text(conv.id, "hello from node 1")
        .await
        .expect("reply");
    let own = a.next_message(WAIT).await.expect("ann's own");
    assert_eq!(own.seq, ack.seq);
    let got = a.next_message(WAIT).await.expect("ann receives");
    assert_eq!(got.sender_id, bob_user.id);

    // A group spanning all three nodes.
    let mut c = synced(cluster.connect(&cat)).await;
    let group = ann
        .create_group("three nodes", &[bob_user.id, cat_user.id])
        .await
        .expect("group");
    let sent = c
        .send_text(group.id, "cat here, on node 2")
        .await
        .expect("cat sends");
    for (who, conn) in [("ann", &mut a), ("bob", &mut b)] {
        conn.wait_for(WAIT, |e| {
            matches!(e, Event::Message(m) if m.conversation_id == group.id && m.seq == sent.seq)
        })
        .await
        .unwrap_or_else(|e| panic!("{who} gets cat's group message: {e}"));
    }

    // Typing crosses nodes.
    a.typing(group.id, confab_sdk::TypingState::Start)
        .await
        .expect("typing");
    for (who, conn) in [("bob", &mut b), ("cat", &mut c)] {
        conn.wait_for(
            WAIT,
            |e| matches!(e, Event::Typing { user_id, .. } if *user_id == ann_user.id),
        )
        .await
        .unwrap_or_else(|e| panic!("{who} sees ann typing: {e}"));
    }

    // Bob leaves: Ann, on another node, sees him go offline.
    b.close().await;
    a.wait_for(WAIT, |e| {
        matches!(e, Event::Presence { user_id, status, .. } if *user_id == bob_user.id && *status == confab_sdk::PresenceStatus::Offline)
    })
    .await
    .expect("ann sees bob offline");
}

fn offline(e: &Event, user: i64) -> bool {
    matches!(e, Event::Presence { user_id, status, .. }
        if *user_id == user && *status == confab_sdk::PresenceStatus::Offline)
}

#[tokio::test]
async fn a_dead_nodes_users_go_offline_for_their_friends_exactly_once() {
    const TTL_S: u64 = 3;
    let mut cluster = Cluster::start_with(3, &["--presence-ttl-s", "3"]).await;
    let (ann, _) = cluster.user("ann", 0).await;
    let (cat, _) = cluster.user("cat", 2).await;
    // Bob knows only node 1: when it dies, he does not come back elsewhere.
    Client::new(&cluster.urls[0])
        .register("bob", PASSWORD, None)
        .await
        .expect("register");
    let bob = Client::new(&cluster.urls[1]);
    let bob_user = bob
        .login("bob", PASSWORD, Some("one node"))
        .await
        .expect("login")
        .user;
    befriend(&ann, &bob).await;
    befriend(&cat, &bob).await;
    let mut a = synced(cluster.connect(&ann)).await;
    let mut c = synced(cluster.connect(&cat)).await;
    let _b = synced(bob.connect(ConnectOptions::default()).expect("connect")).await;
    for (who, conn) in [("ann", &mut a), ("cat", &mut c)] {
        conn.wait_for(WAIT, |e| {
            matches!(e, Event::Presence { user_id, status, .. }
                if *user_id == bob_user.id && *status == confab_sdk::PresenceStatus::Online)
        })
        .await
        .unwrap_or_else(|e| panic!("{who} sees bob online: {e}"));
    }

    cluster.kill(1).await;
    // Within the TTL plus 5 s, from one of the two surviving nodes...
    let within = Duration::from_secs(TTL_S + 5);
    for (who, conn) in [("ann", &mut a), ("cat", &mut c)] {
        conn.wait_for(within, |e| offline(e, bob_user.id))
            .await
            .unwrap_or_else(|e| panic!("{who} sees bob go offline after node 1 died: {e}"));
    }
    // ...and only once: nothing more about bob over two more TTLs.
    for (who, conn) in [("ann", &mut a), ("cat", &mut c)] {
        let again = conn
            .wait_for(Duration::from_secs(2 * TTL_S), |e| offline(e, bob_user.id))
            .await;
        assert!(again.is_err(), "{who} was told twice that bob went offline");
    }
}

/// What one device received: per conversation, (seq, client_msg_id) in
/// arrival order.
type Received = Arc<Mutex<BTreeMap<ConversationId, Vec<(Seq, String)>>>>;

/// Reads a connection's events until it closes, recording messages.
fn record(
    mut conn: Connection,
) -> (
    confab_sdk::ConnectionHandle,
    Received,
    tokio::task::JoinHandle<()>,
) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let handle = conn.handle();
    let task = tokio::spawn(async move {
        while let Some(event) = conn.next_event().await {
            if let Event::Message(m) = event {
                let mut r = sink.lock().expect("lock");
                r.entry(m.conversation_id)
                    .or_default()
                    .push((m.seq, m.client_msg_id));
            }
        }
    });
    (handle, received, task)
}

/// Every device got every acked message of its conversations exactly once,
/// in seq order with no gaps.
fn check_exactly_once_in_order(
    devices: &[(String, Vec<ConversationId>, Received)],
    acked: &HashMap<ConversationId, BTreeMap<Seq, String>>,
) -> Result<(), String> {
    for (who, convs, received) in devices {
        let got = received.lock().expect("lock");
        for conv in convs {
            let list = got.get(conv).cloned().unwrap_or_default();
            let seqs: Vec<Seq> = list.iter().map(|(s, _)| *s).collect();
            let first = seqs.first().copied().unwrap_or(1);
            let want: Vec<Seq> = (first..first + seqs.len() as Seq).collect();
            if seqs != want {
                return Err(format!("{who} conv {conv}: not gapless in order: {seqs:?}"));
            }
            let by_seq: HashMap<Seq, &String> = list.iter().map(|(s, id)| (*s, id)).collect();
            for (seq, id) in acked.get(conv).into_iter().flatten() {
                match by_seq.get(seq) {
                    Some(got) if *got == id => {}
                    Some(got) => {
                        return Err(format!(
                            "{who} conv {conv} seq {seq}: {got} instead of {id}"
                        ))
                    }
                    None => return Err(format!("{who} conv {conv}: acked seq {seq} missing")),
                }
            }
        }
    }
    Ok(())
}

/// Sends `n` messages from a handle into `conv`, one every `gap`,
/// recording acks. Sends that fail for good are recorded as failures.
async fn send_series(
    handle: confab_sdk::ConnectionHandle,
    conv: ConversationId,
    tag: String,
    n: usize,
    gap: Duration,
    acked: Arc<Mutex<HashMap<ConversationId, BTreeMap<Seq, String>>>>,
) -> usize {
    let mut failed = 0;
    let mut pending = Vec::new();
    for i in 0..n {
        let body = json!({ "text": format!("{tag} {i}") });
        match handle.send_nowait(conv, MessageKind::Text, body).await {
            Ok(p) => pending.push(p),
            Err(_) => failed += 1,
        }
        tokio::time::sleep(gap).await;
    }
    for p in pending {
        match tokio::time::timeout(Duration::from_secs(60), p).await {
            Ok(Ok(ack)) => {
                acked
                    .lock()
                    .expect("lock")
                    .entry(ack.conversation_id)
                    .or_default()
                    .insert(ack.seq, ack.client_msg_id);
            }
            _ => failed += 1,
        }
    }
    failed
}

/// Waits until every device has received at least `n` messages (traffic is
/// flowing). The readers only fill shared maps, so this looks every 20 ms.
async fn wait_received(devices: &[(String, Vec<ConversationId>, Received)], n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let fewest = devices
            .iter()
            .map(|(_, _, r)| {
                r.lock()
                    .expect("lock")
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .min()
            .unwrap_or(0);
        if fewest >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a device got only {fewest} messages, waiting for {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the checker passes or time runs out; returns its verdict.
async fn settle(
    devices: &[(String, Vec<ConversationId>, Received)],
    acked: &HashMap<ConversationId, BTreeMap<Seq, String>>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let verdict = check_exactly_once_in_order(devices, acked);
        if verdict.is_ok() || tokio::time::Instant::now() > deadline {
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn killing_a_node_under_traffic_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start(3).await;
    let names = ["ann", "bob", "cat", "dan", "eve", "fay"];
    let mut users = Vec::new();
    for (i, name) in names.iter().enumerate() {
        users.push(cluster.user(name, i % 3).await);
    }
    let ids: Vec<i64> = users.iter().map(|(_, u)| u.id).collect();
    let group = users[0]
        .0
        .create_group("everyone", &ids[1..])
        .await
        .expect("group");
    let direct = users[0]
        .0
        .direct_conversation(ids[1])
        .await
        .expect("direct");

    let mut devices = Vec::new();
    let mut handles = Vec::new();
    let mut readers = Vec::new();
    for (i, (client, _)) in users.iter().enumerate() {
        let conn = synced(cluster.connect(client)).await;
        let (handle, received, task) = record(conn);
        let mut convs = vec![group.id];
        if i < 2 {
            convs.push(direct.id);
        }
        devices.push((names[i].to_string(), convs, received));
        handles.push(handle);
        readers.push(task);
    }

    // Everyone sends into the group, ann and bob also directly; node 0
    // dies with SIGKILL once every device has 100 of the 360 group
    // messages (over a quarter of the way through).
    let acked: Arc<Mutex<HashMap<ConversationId, BTreeMap<Seq, String>>>> = Arc::default();
    let gap = Duration::from_millis(40);
    let mut senders = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        senders.push(tokio::spawn(send_series(
            h.clone(),
            group.id,
            format!("{} group", names[i]),
            60,
            gap,
            acked.clone(),
        )));
        if i < 2 {
            senders.push(tokio::spawn(send_series(
                h.clone(),
                direct.id,
                format!("{} direct", names[i]),
                40,
                gap,
                acked.clone(),
            )));
        }
    }
    wait_received(&devices, 100).await;
    cluster.kill(0).await;
    // HTTP fails over too: ann's client had node 0 first.
    let listed = users[0]
        .0
        .conversations()
        .await
        .expect("the API answers from another node");
    assert_eq!(listed.len(), 2);
    assert_ne!(users[0].0.base_url(), cluster.urls[0]);

    let mut failed = 0;
    for s in senders {
        failed += s.await.expect("sender");
    }
    assert_eq!(
        failed, 0,
        "every send is acked in the end (outbox resends after failover)"
    );
    let acked = acked.lock().expect("lock").clone();
    let total: usize = acked.values().map(BTreeMap::len).sum();
    assert_eq!(total, 6 * 60 + 2 * 40, "one ack per message, no duplicates");
    settle(&devices, &acked)
        .await
        .expect("exactly once, in order, on every device");
    drop(handles);
}

#[tokio::test]
async fn nats_restart_under_traffic_loses_nothing() {
    let mut cluster = Cluster::start(2).await;
    let (ann, _) = cluster.user("ann", 0).await;
    let (bob, bob_user) = cluster.user("bob", 1).await;
    let conv = ann.direct_conversation(bob_user.id).await.expect("direct");
    let (ann_handle, ann_got, _ta) = record(synced(cluster.connect(&ann)).await);
    let (_bob_handle, bob_got, _tb) = record(synced(cluster.connect(&bob)).await);

    let acked: Arc<Mutex<HashMap<ConversationId, BTreeMap<Seq, String>>>> = Arc::default();
    let sender = tokio::spawn(send_series(
        ann_handle,
        conv.id,
        "ann".into(),
        90,
        Duration::from_millis(40),
        acked.clone(),
    ));
    wait_received(&[("bob".to_string(), vec![conv.id], bob_got.clone())], 20).await;
    cluster.nats.stop().await;
    cluster.wait_ready(0, false).await;
    // The outage lasts a while under traffic (40 ms between sends): a
    // length of the scenario, not a wait for something.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.nats.start_again().await;
    cluster.wait_ready(0, true).await;
    cluster.wait_ready(1, true).await;

    assert_eq!(sender.await.expect("sender"), 0, "every send acked");
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.values().map(BTreeMap::len).sum::<usize>(), 90);
    let devices = vec![
        ("ann".to_string(), vec![conv.id], ann_got),
        ("bob".to_string(), vec![conv.id], bob_got),
    ];
    settle(&devices, &acked)
        .await
        .expect("exactly once, in order");
}

#[tokio::test]
async fn postgres_outage_refuses_sends_then_recovers() {
    let mut cluster = Cluster::start(1).await;
    let (ann, _) = cluster.user("ann", 0).await;
    let (_bob, bob_user) = cluster.user("bob", 0).await;
    let conv = ann.direct_conversation(bob_user.id).await.expect("direct");
    let a = synced(cluster.connect(&ann)).await;
    a.send_text(conv.id, "before").await.expect("send before");

    cluster.pg.stop().await;
    cluster.wait_ready(0, false).await;
    // Over HTTP: a clear, retryable refusal.
    let err = ann
        .send_http(
            conv.id,
            "during-1",
            MessageKind::Text,
            json!({"text": "during"}),
        )
        .await
        .expect_err("refused while the database is down");
    assert_eq!(
        err.code(),
        Some(confab_sdk::ErrorCode::Unavailable),
        "{err}"
    );
    // Over WebSocket: never acked while it is not durable (the SDK keeps
    // retrying a retryable refusal).
    let mut pending = a
        .send_nowait(conv.id, MessageKind::Text, json!({"text": "during ws"}))
        .await
        .expect("queued");
    let early = tokio::time::timeout(Duration::from_secs(2), &mut pending).await;
    assert!(
        early.is_err(),
        "acked while the database was down: {early:?}"
    );

    cluster.pg.start_again().await.expect("postgres back");
    cluster.wait_ready(0, true).await;
    tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the queued send is acked once the database is back")
        .expect("ack");
    let after = ann
        .send_http(
            conv.id,
            "after-1",
            MessageKind::Text,
            json!({"text": "after"}),
        )
        .await
        .expect("sends work again");
    let page = ann
        .history(conv.id, confab_sdk::HistoryQuery::default())
        .await
        .expect("history");
    let texts: Vec<&str> = page
        .messages
        .iter()
        .filter_map(|m| m.body["text"].as_str())
        .collect();
    for want in ["before", "during ws", "after"] {
        assert!(texts.contains(&want), "{want} missing: {texts:?}");
    }
    assert!(
        !texts.contains(&"during"),
        "the refused HTTP send was stored"
    );
    assert!(after.seq >= 2);
}

#[tokio::test]
async fn revoking_a_device_closes_its_socket_on_another_node() {
    let cluster = Cluster::start(2).await;
    let (ann, _) = cluster.user("ann", 0).await;
    let other = Client::new(&cluster.urls[1]);
    other
        .login("ann", PASSWORD, Some("laptop"))
        .await
        .expect("second device on node 1");
    let mut raw = other.connect_raw().await.expect("raw socket on node 1");
    let hello = raw.next_frame_within(WAIT).await.expect("hello");
    assert!(matches!(
        hello,
        confab_sdk::proto::ServerFrame::Hello { .. }
    ));

    ann.change_password(PASSWORD, "a much newer password")
        .await
        .expect("password changed on node 0");
    assert!(
        wait_closed(&mut raw, WAIT).await,
        "the revoked device's socket on node 1 stays open"
    );
}
