//! Real nodes on 127.0.0.1 (TCP, Noise, Yamux; mDNS off): delivery both
//! ways with acks after storage, a file pulled in chunks and checked, and
//! a group member catching up from another member while the sender is gone.

use std::time::Duration;

use confab_p2p::node::{Event, Node, NodeConfig};
use confab_p2p::store::Contact;
use tokio::sync::broadcast;

mod common;

use common::{contact_of, next_message, start, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_chat_both_ways_and_send_a_file() {
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
    let mut b_events = b.subscribe();
    let mut a_events = a.subscribe();

    let env = a.send_text("bob", "hello bob").await.expect("send");
    assert!(a
        .wait_delivered(
            a.subscribe(),
            &b.peer_id().to_base58(),
            &env.client_msg_id,
            WAIT
        )
        .await
        .expect("wait"));
    next_message(&mut b_events, "hello bob").await;
    b.send_text("ann", "hi ann").await.expect("reply");
    next_message(&mut a_events, "hi ann").await;

    let conv =
        confab_p2p::direct_conversation_id(&a.peer_id().to_base58(), &b.peer_id().to_base58());
    let (c1, c2) = (conv.clone(), conv.clone());
    let ha = a
        .store()
        .call(move |s| s.history(&c1))
        .await
        .expect("history");
    let hb = b
        .store()
        .call(move |s| s.history(&c2))
        .await
        .expect("history");
    assert_eq!(ha.len(), 2);
    let ids = |h: &[confab_p2p::store::StoredMessage]| {
        h.iter()
            .map(|m| m.client_msg_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&ha), ids(&hb));

    // A 1 MB file (several chunks), byte for byte.
    let bytes: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = da.path().join("blob.bin");
    std::fs::write(&src, &bytes).expect("write");
    let env = a.send_file("bob", &src).await.expect("send file");
    let sha = env.body_json()["media_id"]
        .as_str()
        .expect("sha")
        .to_owned();
    let path = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::FileReceived { sha256, path }) = b_events.recv().await {
                if sha256 == sha {
                    return path;
                }
            }
        }
    })
    .await
    .expect("file arrives");
    assert_eq!(std::fs::read(path).expect("read"), bytes);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_catches_up_from_another_member_not_the_sender() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let a = start(dirs[0].path(), "ann").await;
    let b = start(dirs[1].path(), "bob").await;
    let c = start(dirs[2].path(), "cyd").await;
    let (ca, cb, cc) = (
        contact_of(&a, "ann").await,
        contact_of(&b, "bob").await,
        contact_of(&c, "cyd").await,
    );
    a.add_contact(cb.clone()).await.expect("a+b");
    a.add_contact(cc.clone()).await.expect("a+c");
    b.add_contact(ca.clone()).await.expect("b+a");
    c.add_contact(ca.clone()).await.expect("c+a");
    let mut b_events = b.subscribe();
    let mut c_events = c.subscribe();
    let group = a
        .create_group("trio", vec!["bob".into(), "cyd".into()])
        .await
        .expect("group");
    let env = a
        .send_to_conversation(&group, "text", r#"{"text":"one"}"#.into())
        .await
        .expect("one");
    next_message(&mut b_events, "one").await;
    next_message(&mut c_events, "one").await;
    assert!(a
        .wait_delivered(a.subscribe(), &cc.peer_id, &env.client_msg_id, WAIT)
        .await
        .expect("wait"));

    // c goes offline; a sends two more, which reach b only; then a goes away.
    c.shutdown().await;
    drop(c);
    let mut last = None;
    for text in ["two", "three"] {
        let e = a
            .send_to_conversation(&group, "text", format!(r#"{{"text":"{text}"}}"#))
            .await
            .expect("send");
        next_message(&mut b_events, text).await;
        last = Some(e);
    }
    a.shutdown().await;
    drop(a);
    let last = last.expect("sent");

    // c returns (same data dir) and reaches b: catch-up comes from b.
    let c = start(dirs[2].path(), "cyd").await;
    let mut c_events = c.subscribe();
    c.dial(
        cb.peer_id.parse().expect("peer"),
        cb.addrs.iter().map(|a| a.parse().expect("addr")).collect(),
    )
    .await
    .expect("dial");
    next_message(&mut c_events, "three").await;
    let (g1, g2) = (group.clone(), group.clone());
    let hb = b
        .store()
        .call(move |s| s.history(&g1))
        .await
        .expect("history");
    let hc = c
        .store()
        .call(move |s| s.history(&g2))
        .await
        .expect("history");
    let ids = |h: &[confab_p2p::store::StoredMessage]| {
        h.iter()
            .map(|m| m.client_msg_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&hb), ids(&hc));
    let caught = hc
        .iter()
        .find(|m| m.client_msg_id == last.client_msg_id)
        .expect("three");
    assert_eq!(caught.via, "sync", "came by catch-up from bob");
    b.shutdown().await;
    c.shutdown().await;
}

/// Waits for the first event `pick` accepts.
async fn next_event<T>(
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("{what}: the node stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen"))
}

/// Bob moved: the address in ann's copy of his link is dead, and ann runs
/// without a relay of her own. Bob registered at his relay's rendezvous
/// point (renewing before his short TTL ends), and the link names that
/// relay, so ann looks him up there and reaches him at what he registered.
/// Without the lookup nothing reaches bob: ann has no relay, no mailbox,
/// and the only address she has is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_address_is_stale_is_found_at_its_relays_rendezvous_point() {
    use confab_p2p::relay::{self, RelayConfig};
    let (dr, da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut rc = RelayConfig::new(
        dr.path().to_path_buf(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
    );
    rc.rendezvous_min_ttl = Duration::from_secs(1);
    let (stop_relay, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = relay::start(rc, async move {
        let _ = stopped.await;
    })
    .await
    .expect("relay");
    let relay_addr = relay.addrs[0].clone();

    // Bob: a reservation on the relay, registered with a 3 s TTL.
    let mut config = NodeConfig::new(db.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some("bob".into());
    config.relay = Some(relay_addr.clone());
    config.rendezvous_ttl = Duration::from_secs(3);
    let b = Node::start(config).await.expect("bob");
    let mut b_events = b.events_from_start();
    b.listening(WAIT).await.expect("listening");
    let first = next_event(&mut b_events, "bob's registration", |ev| match ev {
        Event::RendezvousRegistered {
            addrs,
            ttl_s,
            namespace,
            ..
        } => Some((addrs.clone(), *ttl_s, namespace.clone())),
        _ => None,
    })
    .await;
    let registered_at = std::time::Instant::now();
    assert_eq!(first.1, 3, "the TTL asked for");
    assert_eq!(first.2, format!("confab/{}", b.peer_id()));
    assert!(
        first.0.iter().any(|a| a.contains("/p2p-circuit")),
        "the relayed address is registered: {:?}",
        first.0
    );
    let status = b.status().await.expect("status");
    let rdv = status.rendezvous.expect("bob's rendezvous status");
    assert_eq!(rdv.state, "registered", "{rdv:?}");
    assert_eq!(rdv.point, relay.peer_id.to_base58());

    // Past the first registration's TTL: only a renewal keeps bob findable.
    next_event(&mut b_events, "bob's renewal", |ev| {
        matches!(ev, Event::RendezvousRegistered { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(registered_at.elapsed()) + Duration::from_millis(500),
    )
    .await;
    assert!(
        b.status()
            .await
            .expect("status")
            .rendezvous
            .expect("rdv")
            .registrations
            >= 2
    );

    // Ann: no relay; her copy of bob's link has a dead address and bob's relay.
    let stale = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!(
        "/ip4/127.0.0.1/tcp/{}",
        stale.local_addr().expect("addr").port()
    );
    drop(stale);
    let a = start(da.path(), "ann").await;
    let mut a_events = a.subscribe();
    let mut b_msgs = b.subscribe();

    a.add_contact(Contact {
        peer_id: b.peer_id().to_base58(),
        name: "bob".into(),
        addrs: vec![dead],
        relay: Some(relay_addr.to_string()),
    })
    .await
    .expect("ann adds bob");
    // Bob knows ann (envelopes come from contacts only), at no address.
    b.add_contact(Contact {
        peer_id: a.peer_id().to_base58(),
        name: "ann".into(),
        addrs: Vec::new(),
        relay: None,
    })
    .await
    .expect("bob adds ann");
    let env = a.send_text("bob", "found you").await.expect("send");
    let found = next_event(&mut a_events, "ann finding bob", |ev| match ev {
        Event::RendezvousDiscovered { peer, addrs, .. } if *peer == b.peer_id().to_base58() => {
            Some(addrs.clone())
        }
        _ => None,
    })
    .await;
    let relayed = format!("/p2p/{}/p2p-circuit", relay.peer_id);
    assert!(
        found.iter().any(|f| f.contains(&relayed)),
        "found {found:?}: bob's address through the relay"
    );
    next_message(&mut b_msgs, "found you").await;
    assert!(a
        .wait_delivered(
            a.subscribe(),
            &b.peer_id().to_base58(),
            &env.client_msg_id,
            WAIT
        )
        .await
        .expect("wait"));
    let status = a.status().await.expect("status");
    assert!(status.rendezvous.is_none(), "ann registers nowhere");
    let bob = status
        .contacts
        .iter()
        .find(|c| c.name == "bob")
        .expect("bob in ann's status");
    assert_eq!(bob.discovered, found);
    a.shutdown().await;
    b.shutdown().await;
    let _ = stop_relay.send(());
}

#[tokio::test]
async fn a_stopping_peer_withdraws_its_rendezvous_registration() {
    use confab_p2p::relay::{self, RelayConfig};
    let (dr, db, dc) = (
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

    // Bob registers for the default 2 h, then stops.
    let mut config = NodeConfig::new(db.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some("bob".into());
    config.relay = Some(relay_addr.clone());
    let b = Node::start(config).await.expect("bob");
    let mut b_events = b.events_from_start();
    next_event(&mut b_events, "bob's registration", |ev| {
        matches!(ev, Event::RendezvousRegistered { .. }).then_some(())
    })
    .await;
    let bob = b.peer_id().to_base58();
    b.shutdown().await;

    // Carl has bob's link (a dead address and the relay): his lookup at
    // the relay finds no registration of bob's, not the stale 2 h one.
    let stale = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!(
        "/ip4/127.0.0.1/tcp/{}",
        stale.local_addr().expect("addr").port()
    );
    drop(stale);
    let c = start(dc.path(), "carl").await;
    let mut c_events = c.subscribe();
    c.add_contact(Contact {
        peer_id: bob.clone(),
        name: "bob".into(),
        addrs: vec![dead],
        relay: Some(relay_addr.to_string()),
    })
    .await
    .expect("carl adds bob");
    c.send_text("bob", "are you there?").await.expect("send");
    let found = next_event(&mut c_events, "carl's lookup of bob", |ev| match ev {
        Event::RendezvousNotFound { peer, .. } if *peer == bob => Some(None),
        Event::RendezvousDiscovered { peer, addrs, .. } if *peer == bob => {
            Some(Some(addrs.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(found, None, "bob's registration outlived him");
    c.shutdown().await;
    let _ = stop_relay.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_member_sends_in_a_group_reaches_the_other_members() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let a = start(dirs[0].path(), "ann").await;
    let b = start(dirs[1].path(), "bob").await;
    let c = start(dirs[2].path(), "cyd").await;
    let (ca, cb, cc) = (
        contact_of(&a, "ann").await,
        contact_of(&b, "bob").await,
        contact_of(&c, "cyd").await,
    );
    // ann knows both; bob and cyd know only ann (and each other as fellow
    // members once the group exists).
    a.add_contact(cb.clone()).await.expect("a+b");
    a.add_contact(cc.clone()).await.expect("a+c");
    b.add_contact(ca.clone()).await.expect("b+a");
    c.add_contact(ca.clone()).await.expect("c+a");
    let mut b_events = b.subscribe();
    let mut c_events = c.subscribe();
    let group = a
        .create_group("trio", vec!["bob".into(), "cyd".into()])
        .await
        .expect("group");
    a.send_to_conversation(&group, "text", r#"{"text":"hi"}"#.into())
        .await
        .expect("hi");
    next_message(&mut b_events, "hi").await;
    next_message(&mut c_events, "hi").await;

    // bob offers a file in the group; cyd reaches bob and pulls it whole.
    let bytes: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
    let path = dirs[1].path().join("plan.bin");
    std::fs::write(&path, &bytes).expect("write");
    c.dial(
        cb.peer_id.parse().expect("peer"),
        cb.addrs.iter().map(|a| a.parse().expect("addr")).collect(),
    )
    .await
    .expect("dial");
    b.send_file_to_conversation(&group, &path)
        .await
        .expect("offer");
    let got = next_event(&mut c_events, "cyd's copy", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(std::fs::read(got).expect("read"), bytes);

    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
