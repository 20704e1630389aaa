//! Read receipts and typing between two `confab p2p listen` processes on
//! 127.0.0.1: a receipt is a signed envelope delivered like a message
//! (once, to every member); typing is a signed ephemeral envelope that is
//! shown and stored nowhere.

use std::path::Path;

use super::support::{cli, peer_id, Peer};

fn start(name: &str, dir: &Path) -> Peer {
    let args = [
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    let mut p = Peer::start(None, name, dir, &args);
    p.wait_listening();
    p
}

fn link(dir: &Path) -> String {
    cli(&["id"], dir)[0]["link"]
        .as_str()
        .expect("link")
        .to_owned()
}

#[test]
fn a_contact_reads_what_was_sent_and_typing_is_shown_but_not_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ida, idb) = (peer_id(&da), peer_id(&db));
    let mut a = start("ann", &da);
    let mut b = start("bob", &db);
    cli(&["add", &link(&db)], &da);
    cli(&["add", &link(&da)], &db);

    let mut sent = Vec::new();
    for text in ["one", "二 二"] {
        let m = cli(&["send", "bob", text, "--wait", "20"], &da).remove(0);
        assert_eq!(m["delivered"], true, "{m}");
        sent.push(m["client_msg_id"].as_str().expect("id").to_owned());
    }
    for id in &sent {
        let id = id.clone();
        b.wait_for("ann's text", move |v| {
            v["event"] == "message" && v["message"]["client_msg_id"] == id.as_str()
        });
    }

    // bob reads: one receipt naming both, delivered to ann once.
    let r = cli(&["read", "ann"], &db).remove(0);
    let mut of: Vec<String> = r["of"]
        .as_array()
        .expect("of")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    of.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(of, want);
    let rid = r["client_msg_id"].as_str().expect("receipt id").to_owned();
    a.wait_for("bob's receipt", |v| {
        v["event"] == "message"
            && v["message"]["kind"] == "receipt"
            && v["message"]["client_msg_id"] == rid.as_str()
    });
    // Nothing new to read: no second receipt.
    let again = cli(&["read", "ann"], &db).remove(0);
    assert_eq!(again["of"], serde_json::json!([]), "{again}");
    // ann's history shows both as read by bob (and bob's shows the same).
    for dir in [&da, &db] {
        let contact = if dir == &da { &idb } else { &ida };
        let h = cli(&["history", contact], dir);
        for id in &sent {
            let m = h
                .iter()
                .find(|m| m["client_msg_id"] == id.as_str())
                .expect("message in history");
            assert_eq!(m["read_by"], serde_json::json!([idb]), "{m}");
        }
        let receipts = h.iter().filter(|m| m["kind"] == "receipt").count();
        assert_eq!(receipts, 1, "one receipt, stored once");
    }

    // bob types: ann sees it, and neither side stores anything for it.
    let before = cli(&["history", "bob"], &da).len();
    let t = cli(&["typing", "ann"], &db).remove(0);
    assert_eq!(t["sent"], 1, "{t}");
    a.wait_for("bob typing", |v| {
        v["event"] == "typing" && v["peer"] == idb.as_str()
    });
    assert_eq!(cli(&["history", "bob"], &da).len(), before);
    assert_eq!(cli(&["history", "ann"], &db).len(), before);
    let status = cli(&["status"], &db).remove(0);
    let pending = status["contacts"][0]["pending"].as_u64();
    assert_eq!(pending, Some(0), "typing is not queued: {status}");

    // Without a connection there is nobody to tell.
    drop(a);
    b.wait_for("ann gone", |v| v["event"] == "disconnected");
    let t = cli(&["typing", "ann"], &db).remove(0);
    assert_eq!(t["sent"], 0, "{t}");
}
