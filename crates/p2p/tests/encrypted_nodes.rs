//! Encrypted P2P conversations between real nodes on 127.0.0.1: the
//! KeyPackage asked over `/confab/kp/1`, the Welcome and messages as
//! `encrypted` envelopes, decrypted history on both sides, no plaintext in
//! any stored envelope, and a restart that keeps the MLS state.

use std::path::Path;
use std::time::Duration;

use confab_p2p::node::{Node, NodeConfig};

mod common;

use common::{contact_of, next_message, start, WAIT};

async fn encrypted_with(node: &Node, contact: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match node.encrypted_conversation(contact).await {
                Ok(id) => return id,
                Err(e) => {
                    assert!(e.to_string().contains("waiting for keys"), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await
    .expect("the contact's key package")
}

/// Texts of the decrypted history (encrypted ones only).
async fn texts(node: &Node, conv: &str) -> Vec<String> {
    let conv = conv.to_owned();
    node.store()
        .call(move |s| s.shown_history(&conv))
        .await
        .expect("history")
        .into_iter()
        .filter(|s| s.encrypted && s.message.kind == "text")
        .filter_map(|s| {
            serde_json::from_str::<serde_json::Value>(&s.message.body)
                .ok()
                .and_then(|v| v["text"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Every stored envelope (and its body) of a data dir, read from the
/// SQLite file by another connection.
fn raw_envelopes(dir: &Path) -> Vec<u8> {
    let conn = rusqlite::Connection::open(dir.join(confab_p2p::store::STORE_FILE)).expect("db");
    let mut stmt = conn
        .prepare("SELECT body || envelope FROM messages")
        .expect("sql");
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query");
    rows.flat_map(|r| r.expect("row").into_bytes()).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Two nodes (ann, bob) in their temp dirs, each the other's contact.
async fn ann_and_bob() -> (tempfile::TempDir, tempfile::TempDir, Node, Node) {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = start(da.path(), "ann").await;
    let b = start(db.path(), "bob").await;
    a.add_contact(contact_of(&b, "bob").await)
        .await
        .expect("a adds b");
    b.add_contact(contact_of(&a, "ann").await)
        .await
        .expect("b adds a");
    (da, db, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_direct_conversation_between_two_nodes_survives_a_restart() {
    let (da, db, a, mut b) = ann_and_bob().await;
    let mut b_events = b.subscribe();
    let mut a_events = a.subscribe();

    let conv = encrypted_with(&a, "bob").await;
    let plain =
        confab_p2p::direct_conversation_id(&a.peer_id().to_base58(), &b.peer_id().to_base58());
    assert_ne!(conv, plain);
    let cn = "我们明天下午开会";
    let body = serde_json::json!({ "text": cn }).to_string();
    let env = a.send_encrypted(&conv, "text", body).await.expect("send");
    assert_eq!(env.kind, "encrypted");
    assert!(!env.body.contains(cn));
    next_message(&mut b_events, cn).await;
    // b answers in the same conversation (it has the group now).
    assert_eq!(encrypted_with(&b, "ann").await, conv);
    let reply = serde_json::json!({ "text": "好的，下午见" }).to_string();
    b.send_encrypted(&conv, "text", reply).await.expect("reply");
    next_message(&mut a_events, "好的，下午见").await;
    let both = vec![cn.to_owned(), "好的，下午见".to_owned()];
    assert_eq!(texts(&a, &conv).await, both);
    assert_eq!(texts(&b, &conv).await, both);
    for dir in [da.path(), db.path()] {
        let raw = raw_envelopes(dir);
        assert!(!raw.is_empty());
        for t in [cn, "好的，下午见"] {
            assert!(
                !contains(&raw, t.as_bytes()),
                "plaintext in a stored envelope"
            );
        }
    }

    // b restarts on its data dir: later messages open, earlier ones are
    // not opened twice (they stay as they were).
    b.shutdown().await;
    drop(b);
    b = start(db.path(), "bob").await;
    let mut b_events = b.subscribe();
    b.add_contact(contact_of(&a, "ann").await)
        .await
        .expect("b adds a");
    let body = serde_json::json!({ "text": "after the restart" }).to_string();
    a.send_encrypted(&conv, "text", body).await.expect("send");
    next_message(&mut b_events, "after the restart").await;
    let mut all = both.clone();
    all.push("after the restart".into());
    assert_eq!(texts(&b, &conv).await, all);
    a.shutdown().await;
    b.shutdown().await;
}

async fn start_with_relay(dir: &Path, name: &str, relay: &confab_p2p::Multiaddr) -> Node {
    let mut config = NodeConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some(name.into());
    config.relay = Some(relay.clone());
    Node::start(config).await.expect("start")
}

/// Every byte of every file in `dir` (the relay's mailbox.sqlite, its WAL).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        if entry.path().is_file() {
            out.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_member_gets_ciphertext_from_the_mailbox_and_decrypts_it() {
    use confab_p2p::relay::{self, RelayConfig};
    let (dr, da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let rc = RelayConfig::new(
        dr.path().to_path_buf(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
    );
    let (stop_relay, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = relay::start(rc, async move {
        let _ = stopped.await;
    })
    .await
    .expect("relay");
    let relay_addr = relay.addrs[0].clone();
    let a = start_with_relay(da.path(), "ann", &relay_addr).await;
    let b = start_with_relay(db.path(), "bob", &relay_addr).await;
    let mut bob = contact_of(&b, "bob").await;
    bob.relay = Some(relay_addr.to_string());
    a.add_contact(bob).await.expect("a adds b");
    b.add_contact(contact_of(&a, "ann").await)
        .await
        .expect("b adds a");
    let mut b_events = b.subscribe();
    let conv = encrypted_with(&a, "bob").await;
    let body = serde_json::json!({ "text": "hello" }).to_string();
    a.send_encrypted(&conv, "text", body).await.expect("send");
    next_message(&mut b_events, "hello").await;

    // Bob goes offline; ann's next message waits in the relay's mailbox.
    b.shutdown().await;
    drop(b);
    let secret = "我们明天下午开会";
    let body = serde_json::json!({ "text": secret }).to_string();
    let env = a.send_encrypted(&conv, "text", body).await.expect("send");
    tokio::time::timeout(WAIT, async {
        while !contains(&all_bytes(dr.path()), env.client_msg_id.as_bytes()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the envelope reached the mailbox");
    assert!(
        !contains(&all_bytes(dr.path()), secret.as_bytes()),
        "plaintext in the mailbox"
    );

    // Bob comes back (ann is gone too): the mailbox hands it over and bob
    // decrypts it.
    a.shutdown().await;
    drop(a);
    let b = start_with_relay(db.path(), "bob", &relay_addr).await;
    let mut b_events = b.events_from_start();
    next_message(&mut b_events, secret).await;
    assert_eq!(
        texts(&b, &conv).await,
        vec!["hello".to_owned(), secret.to_owned()]
    );
    b.shutdown().await;
    let _ = stop_relay.send(());
}

/// Waits for the message to show decrypted in `node`'s history.
async fn wait_text(node: &Node, conv: &str, text: &str) {
    let arrived = tokio::time::timeout(WAIT, async {
        while !texts(node, conv).await.iter().any(|t| t == text) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();
    if !arrived {
        let id = conv.to_owned();
        let history = node.store().call(move |s| s.shown_history(&id)).await;
        panic!(
            "{text:?} did not arrive decrypted at {}: {history:#?}",
            node.peer_id()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_group_adds_and_removes_members_with_commits() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let a = start(dirs[0].path(), "ann").await;
    let b = start(dirs[1].path(), "bob").await;
    let c = start(dirs[2].path(), "cat").await;
    let d = start(dirs[3].path(), "dan").await;
    for (n, name) in [(&b, "bob"), (&c, "cat"), (&d, "dan")] {
        a.add_contact(contact_of(n, name).await)
            .await
            .expect("a adds");
        n.add_contact(contact_of(&a, "ann").await)
            .await
            .expect("adds a");
    }
    // b and c know each other too (catch-up between members).
    b.add_contact(contact_of(&c, "cat").await)
        .await
        .expect("b adds c");
    c.add_contact(contact_of(&b, "bob").await)
        .await
        .expect("c adds b");
    let g = tokio::time::timeout(WAIT, async {
        loop {
            match a
                .create_encrypted_group("plans", vec!["bob".into(), "cat".into()])
                .await
            {
                Ok(g) => return g,
                Err(e) => {
                    assert!(e.to_string().contains("waiting for keys"), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await
    .expect("the group");
    let send = |text: &str| serde_json::json!({ "text": text }).to_string();
    a.send_encrypted(&g, "text", send("before dan"))
        .await
        .expect("send");
    for n in [&b, &c] {
        wait_text(n, &g, "before dan").await;
    }
    let mut d_events = d.subscribe();
    a.change_group(&g, vec!["dan".into()], vec![])
        .await
        .expect("add dan");
    a.send_encrypted(&g, "text", send("dan is here"))
        .await
        .expect("send");
    for n in [&b, &c, &d] {
        wait_text(n, &g, "dan is here").await;
    }
    // b has applied the commit now (it opened a message of the new epoch),
    // so what it sends dan can read.
    b.send_encrypted(&g, "text", send("hi dan"))
        .await
        .expect("send");
    for n in [&a, &c, &d] {
        wait_text(n, &g, "hi dan").await;
    }
    assert!(!texts(&d, &g).await.contains(&"before dan".to_owned()));
    // What dan caught up on from before it joined is shown as unreadable,
    // saying why, never as nothing.
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(confab_p2p::node::Event::Message { message }) = d_events.recv().await {
                let body: serde_json::Value =
                    serde_json::from_str(&message.body).unwrap_or_default();
                if message.conversation_id == g
                    && message.kind == "encrypted"
                    && body["unreadable"].is_string()
                {
                    return;
                }
            }
        }
    })
    .await
    .expect("an unreadable line for the message from before dan joined");
    a.change_group(&g, vec![], vec!["cat".into()])
        .await
        .expect("remove cat");
    a.send_encrypted(&g, "text", send("without cat"))
        .await
        .expect("send");
    for n in [&b, &d] {
        wait_text(n, &g, "without cat").await;
    }
    assert!(!texts(&c, &g).await.contains(&"without cat".to_owned()));
    for n in [a, b, c, d] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_texts_to_an_offline_contact_wait_for_its_keys_and_go_when_it_connects() {
    use confab_p2p::node::{EncryptedSend, Event};
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = start(da.path(), "ann").await;
    let b = start(db.path(), "bob").await;
    a.add_contact(contact_of(&b, "bob").await)
        .await
        .expect("a adds b");
    let ann = contact_of(&a, "ann").await;
    b.shutdown().await;
    drop(b);

    // Bob is offline: no key package, so both texts wait, in order, and
    // nothing is sent in the clear.
    let texts_sent = ["第一条：我们明天开会", "second, after the first"];
    let mut ids = Vec::new();
    for t in texts_sent {
        let body = serde_json::json!({ "text": t }).to_string();
        match a
            .send_encrypted_to_contact("bob", "text", body, Duration::from_millis(500))
            .await
            .expect("send")
        {
            EncryptedSend::Waiting {
                client_msg_id,
                reason,
                ..
            } => {
                assert!(reason.contains("waiting for keys"), "{reason}");
                ids.push(client_msg_id);
            }
            EncryptedSend::Sent(env) => panic!("sent without the contact's keys: {env:?}"),
        }
    }
    let waiting = a.waiting_sends().await.expect("waiting");
    assert_eq!(
        waiting
            .iter()
            .map(|w| w.client_msg_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(!contains(
        &raw_envelopes(da.path()),
        "我们明天开会".as_bytes()
    ));

    // Bob comes back and dials ann: ann's node sends both, encrypted.
    let mut a_events = a.subscribe();
    let b = start(db.path(), "bob").await;
    let mut b_events = b.subscribe();
    b.add_contact(ann).await.expect("b adds a");
    // Envelopes may arrive in any order; history shows them in order.
    // (one may first show as waiting for the Welcome, then opened)
    let mut got: Vec<String> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !texts_sent.iter().all(|t| got.iter().any(|b| b.contains(t))) {
            if let Ok(Event::Message { message }) = b_events.recv().await {
                got.push(message.body);
            }
        }
    })
    .await
    .expect("both arrived");
    for t in texts_sent {
        assert!(got.iter().any(|b| b.contains(t)), "{t} in {got:?}");
    }
    let mut announced = Vec::new();
    tokio::time::timeout(WAIT, async {
        while announced.len() < 2 {
            if let Ok(Event::WaitingSent { client_msg_id, .. }) = a_events.recv().await {
                announced.push(client_msg_id);
            }
        }
    })
    .await
    .expect("both announced");
    assert_eq!(announced, ids);
    assert!(a.waiting_sends().await.expect("waiting").is_empty());
    let conv = encrypted_with(&a, "bob").await;
    let want: Vec<String> = texts_sent.iter().map(|t| t.to_string()).collect();
    assert_eq!(texts(&b, &conv).await, want);
    assert_eq!(texts(&a, &conv).await, want);
    // The ids given when they were queued are the envelopes' ids.
    let history = b
        .store()
        .call({
            let conv = conv.clone();
            move |s| s.shown_history(&conv)
        })
        .await
        .expect("history");
    let got: Vec<String> = history
        .iter()
        .filter(|s| s.message.kind == "text")
        .map(|s| s.message.client_msg_id.clone())
        .collect();
    assert_eq!(got, ids);
    for dir in [da.path(), db.path()] {
        assert!(!contains(&raw_envelopes(dir), "我们明天开会".as_bytes()));
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn start_keys_due(dir: &Path, name: &str) -> Node {
    let mut config = NodeConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some(name.into());
    config.key_update_interval = Duration::ZERO;
    Node::start(config).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_who_made_the_group_updates_its_keys_on_schedule() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // Keys are due at every send on both; only the group's maker (the
    // lower PeerId, in a direct conversation) commits.
    let a = start_keys_due(da.path(), "ann").await;
    let b = start_keys_due(db.path(), "bob").await;
    a.add_contact(contact_of(&b, "bob").await)
        .await
        .expect("a adds b");
    b.add_contact(contact_of(&a, "ann").await)
        .await
        .expect("b adds a");
    // Whoever asks, the lower PeerId makes the group.
    let conv = encrypted_with(&b, "ann").await;
    assert_eq!(encrypted_with(&a, "bob").await, conv);
    let (maker, other) = if a.peer_id().to_base58() < b.peer_id().to_base58() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let mut maker_events = maker.subscribe();
    let mut other_events = other.subscribe();
    let epoch = |n: &Node| {
        let conv = conv.clone();
        let store = n.store().clone();
        async move {
            store
                .call(move |s| Ok(s.mls_epoch(&conv)))
                .await
                .expect("epoch")
        }
    };
    let start_epoch = epoch(maker).await.expect("the maker's group");
    assert_eq!(epoch(other).await, Some(start_epoch));
    let sent = ["第一条", "第二条", "第三条"];
    for t in sent {
        let body = serde_json::json!({ "text": t }).to_string();
        maker
            .send_encrypted(&conv, "text", body)
            .await
            .expect("send");
        next_message(&mut other_events, t).await;
    }
    // One key-update commit before each send, followed by the other side.
    assert_eq!(epoch(maker).await, Some(start_epoch + 3));
    assert_eq!(epoch(other).await, Some(start_epoch + 3));
    // The other side is no committer: its sends change no epoch.
    let body = serde_json::json!({ "text": "收到" }).to_string();
    other
        .send_encrypted(&conv, "text", body)
        .await
        .expect("reply");
    next_message(&mut maker_events, "收到").await;
    assert_eq!(epoch(other).await, Some(start_epoch + 3));
    assert_eq!(epoch(maker).await, Some(start_epoch + 3));
    let mut want: Vec<String> = sent.iter().map(|t| t.to_string()).collect();
    want.push("收到".into());
    assert_eq!(texts(&a, &conv).await, want);
    assert_eq!(texts(&b, &conv).await, want);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_writing_while_apart_end_in_one_group() {
    use confab_p2p::node::EncryptedSend;
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = start(da.path(), "ann").await;
    let b = start(db.path(), "bob").await;
    let (ann, bob) = (contact_of(&a, "ann").await, contact_of(&b, "bob").await);
    // Neither knows the other's address yet: both write, both wait.
    let unreachable = |mut c: confab_p2p::store::Contact| {
        c.addrs.clear();
        c
    };
    a.add_contact(unreachable(bob.clone()))
        .await
        .expect("a adds b");
    b.add_contact(unreachable(ann.clone()))
        .await
        .expect("b adds a");
    for (node, to, text) in [(&a, "bob", "安写的"), (&b, "ann", "鲍勃写的")] {
        let body = serde_json::json!({ "text": text }).to_string();
        let sent = node
            .send_encrypted_to_contact(to, "text", body, Duration::ZERO)
            .await
            .expect("send");
        assert!(matches!(sent, EncryptedSend::Waiting { .. }), "{sent:?}");
    }
    // They meet: each side's text is sent, and both read both.
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    a.add_contact(bob).await.expect("a dials b");
    next_message(&mut b_events, "安写的").await;
    next_message(&mut a_events, "鲍勃写的").await;
    let conv = encrypted_with(&a, "bob").await;
    for n in [&a, &b] {
        let mut got = texts(n, &conv).await;
        got.sort();
        assert_eq!(got, vec!["安写的".to_owned(), "鲍勃写的".to_owned()]);
    }
    let epochs = (
        a.store()
            .call({
                let c = conv.clone();
                move |s| Ok(s.mls_epoch(&c))
            })
            .await
            .expect("a"),
        b.store()
            .call({
                let c = conv.clone();
                move |s| Ok(s.mls_epoch(&c))
            })
            .await
            .expect("b"),
    );
    assert_eq!(epochs.0, epochs.1);
    assert!(epochs.0.is_some());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_in_an_encrypted_conversation_has_its_details_inside_mls() {
    use confab_p2p::node::{EncryptedSend, Event};
    let (da, db, a, b) = ann_and_bob().await;
    let name = "会议纪要-secret.txt";
    let path = da.path().join(name);
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &bytes).expect("write");
    let mut b_events = b.subscribe();
    let env = match a
        .send_encrypted_file_to_contact("bob", &path, WAIT)
        .await
        .expect("send")
    {
        EncryptedSend::Sent(env) => env,
        w => panic!("the contact is online: {w:?}"),
    };
    assert_eq!(env.kind, "encrypted");
    assert!(!env.body.contains("会议纪要"));
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::FileReceived { path, .. }) = b_events.recv().await {
                return path;
            }
        }
    })
    .await
    .expect("the file arrived");
    assert_eq!(std::fs::read(&got).expect("read"), bytes);
    let conv = env.conversation_id.clone();
    let shown = b
        .store()
        .call(move |s| s.shown_history(&conv))
        .await
        .expect("history");
    let file = shown
        .iter()
        .find(|s| s.message.kind == "file")
        .expect("the file message");
    assert!(file.encrypted);
    assert!(file.message.body.contains(name));
    for dir in [da.path(), db.path()] {
        assert!(!contains(&raw_envelopes(dir), "会议纪要".as_bytes()));
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A peer gives one KeyPackage per asker every 5 s; a second request
/// within that time is answered with how long to wait, and the node asks
/// again by itself: the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_key_package_request_within_five_seconds_waits_instead_of_failing() {
    let (_da, _db, a, b) = ann_and_bob().await;
    let mut b_events = b.subscribe();
    // The direct conversation takes one KeyPackage (or hands one over).
    let direct = encrypted_with(&a, "bob").await;
    // A group with the same member at once: bob was asked moments ago.
    let g = a
        .create_encrypted_group("周末计划", vec!["bob".into()])
        .await
        .expect("the group, after bob's wait");
    assert_ne!(g, direct);
    let body = serde_json::json!({ "text": "周六去爬山" }).to_string();
    a.send_encrypted(&g, "text", body).await.expect("send");
    next_message(&mut b_events, "周六去爬山").await;
}
