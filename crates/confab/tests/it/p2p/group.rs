//! A serverless group of three `confab p2p listen` processes (127.0.0.1,
//! no mDNS): one member is killed for part of the conversation, the sender
//! goes away too, and the member catches up from the third member.

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

fn texts(group: &str, dir: &Path) -> Vec<(String, String)> {
    cli(&["group", "history", group], dir)
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| {
            (
                m["client_msg_id"].as_str().unwrap_or_default().to_owned(),
                m["via"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has_text(v: &serde_json::Value, text: &str) -> bool {
    v["event"] == "message"
        && v["message"]["body"]
            .as_str()
            .is_some_and(|b| b.contains(text))
}

#[test]
fn a_member_offline_for_part_of_a_group_catches_up_from_another_member() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db, dc) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let (_ida, idb, idc) = (peer_id(&da), peer_id(&db), peer_id(&dc));
    let mut a = start("ann", &da);
    let mut b = start("bob", &db);
    let mut c = start("cyd", &dc);
    let (la, lb, lc) = (link(&da), link(&db), link(&dc));
    cli(&["add", &lb], &da);
    cli(&["add", &lc], &da);
    cli(&["add", &la], &db);
    cli(&["add", &la], &dc);

    let group = cli(&["group", "create", "trio", &idb, &idc], &da)[0]["group"]
        .as_str()
        .expect("group id")
        .to_owned();
    cli(&["group", "send", &group, "one"], &da);
    b.wait_for("one at bob", |v| has_text(v, "one"));
    c.wait_for("one at cyd", |v| has_text(v, "one"));

    // cyd is killed; ann sends two more that reach bob; then ann goes too.
    c.kill9();
    cli(&["group", "send", &group, "two"], &da);
    cli(&["group", "send", &group, "three"], &da);
    b.wait_for("three at bob", |v| has_text(v, "three"));
    a.kill9();

    // cyd returns: only bob is there to fill the gap.
    let mut c = start("cyd", &dc);
    c.wait_for("three at cyd", |v| has_text(v, "three"));
    let at_b = texts(&group, &db);
    let at_c = texts(&group, &dc);
    assert_eq!(at_b.len(), 3);
    let ids = |v: &[(String, String)]| v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&at_b), ids(&at_c), "one order");
    assert_eq!(at_c[1].1, "sync", "two came by catch-up");
    assert_eq!(at_c[2].1, "sync", "three came by catch-up");
    drop(b);
}
