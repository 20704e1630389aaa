//! Peer-to-peer on a LAN with no server: two `confab p2p listen` processes
//! in their own network namespaces on one bridge find each other by mDNS,
//! add each other (confirmed), chat both ways, move a 5 MB file byte for
//! byte; one is killed with SIGKILL while the other keeps sending and comes
//! back: every message exactly once, in the same order on both.

use std::collections::HashSet;

use super::support::{can_build_namespaces, cli, history_ids, peer_id, Lan, Peer};

fn listen_args(ip: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("/ip4/{ip}/tcp/4001"),
        "--listen".into(),
        format!("/ip4/{ip}/udp/4001/quic-v1"),
    ]
}

fn send(from: &std::path::Path, to: &str, text: &str, wait: &str) -> serde_json::Value {
    cli(&["send", to, text, "--wait", wait], from).remove(0)
}

#[test]
fn lan_peers_find_each_other_chat_move_a_file_and_survive_a_kill() {
    if !can_build_namespaces("lan_peers_find_each_other_chat_move_a_file_and_survive_a_kill") {
        return;
    }
    let lan = Lan::new(2, 77);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db) = (tmp.path().join("ann"), tmp.path().join("bob"));
    let (ida, idb) = (peer_id(&da), peer_id(&db));
    let mut a = Peer::start(Some(&lan.hosts[0]), "ann", &da, &listen_args(&lan.ip(0)));
    let mut b = Peer::start(Some(&lan.hosts[1]), "bob", &db, &listen_args(&lan.ip(1)));
    a.wait_listening();
    b.wait_listening();

    // mDNS: each sees the other; adding needs confirmation (--yes here).
    a.wait_for("mDNS discovery of bob", |v| {
        v["event"] == "discovered" && v["peer"] == idb
    });
    b.wait_for("mDNS discovery of ann", |v| {
        v["event"] == "discovered" && v["peer"] == ida
    });
    let nearby = cli(&["nearby"], &da).remove(0);
    assert!(
        nearby
            .as_array()
            .expect("list")
            .iter()
            .any(|p| p["peer_id"] == idb),
        "{nearby}"
    );
    cli(&["nearby", "--add", &idb, "--yes"], &da);
    cli(&["nearby", "--add", &ida, "--yes"], &db);

    // Chat both ways, acked after the other side stored it.
    let m = send(&da, &idb, "hello bob", "20");
    assert_eq!(m["delivered"], true, "{m}");
    let m = send(&db, &ida, "hello ann", "20");
    assert_eq!(m["delivered"], true, "{m}");
    a.wait_for("bob's message", |v| {
        v["event"] == "message"
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("hello ann"))
    });

    // A 5 MB file, byte for byte (pulled in chunks, SHA-256 checked).
    let bytes: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let src = tmp.path().join("five.bin");
    std::fs::write(&src, &bytes).expect("write");
    let src_s = src.display().to_string();
    let offer = cli(&["send-file", &idb, &src_s, "--wait", "20"], &da).remove(0);
    assert_eq!(offer["delivered"], true, "{offer}");
    let got = b.wait_for("the file", |v| v["event"] == "file_received");
    let path = got["path"].as_str().expect("path");
    assert!(std::fs::read(path).expect("read") == bytes, "file differs");

    // Kill -9 bob while ann keeps sending; bob returns with the same data dir.
    // (recipient is bob, client_msg_id) of every send from here on.
    let mut sent: Vec<(bool, String)> = Vec::new();
    let id_of = |m: serde_json::Value| {
        m["client_msg_id"]
            .as_str()
            .expect("client_msg_id")
            .to_owned()
    };
    for i in 0..3 {
        sent.push((true, id_of(send(&da, &idb, &format!("before {i}"), "0"))));
    }
    b.kill9();
    for i in 0..5 {
        sent.push((
            true,
            id_of(send(&da, &idb, &format!("while down {i}"), "0")),
        ));
    }
    let mut b = Peer::start(Some(&lan.hosts[1]), "bob", &db, &listen_args(&lan.ip(1)));
    b.wait_listening();
    for i in 0..3 {
        sent.push((
            false,
            id_of(send(&db, &ida, &format!("bob is back {i}"), "0")),
        ));
        sent.push((true, id_of(send(&da, &idb, &format!("ann again {i}"), "0"))));
    }
    // Each message reaches its recipient: already stored (by the killed
    // process), or stored now by the restarted one.
    for (to_bob, id) in &sent {
        let (recipient, dir, contact) = if *to_bob {
            (&mut b, &db, &ida)
        } else {
            (&mut a, &da, &idb)
        };
        if history_ids(contact, dir).contains(id) {
            continue;
        }
        let id2 = id.clone();
        recipient.wait_for("a delivery after the restart", move |v| {
            v["event"] == "message" && v["message"]["client_msg_id"] == id2.as_str()
        });
    }
    let ha = history_ids(&idb, &da);
    let hb = history_ids(&ida, &db);
    assert_eq!(ha.len(), 2 + 3 + 5 + 6, "ann's history: {ha:?}");
    assert_eq!(
        ha.iter().collect::<HashSet<_>>().len(),
        ha.len(),
        "no repeats"
    );
    assert_eq!(ha, hb, "one order on both");
    for (_, id) in &sent {
        assert!(ha.contains(id), "{id} missing");
    }
    // Both outboxes drain.
    a.wait_for("ann's last ack", |v| {
        v["event"] == "delivered" && v["client_msg_id"] == sent[sent.len() - 1].1.as_str()
    });
    drop(lan);
}
