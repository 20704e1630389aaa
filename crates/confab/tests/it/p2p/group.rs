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

#[test]
fn the_admin_adds_a_member_who_catches_up_and_removes_one_who_hears_no_more() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db, dc) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let (ida, idb, idc) = (peer_id(&da), peer_id(&db), peer_id(&dc));
    let a = start("ann", &da);
    let mut b = start("bob", &db);
    let mut c = start("cyd", &dc);
    let (la, lb, lc) = (link(&da), link(&db), link(&dc));
    cli(&["add", &lb], &da);
    cli(&["add", &lc], &da);
    cli(&["add", &la], &db);
    cli(&["add", &la], &dc);

    let group = cli(&["group", "create", "duo", &idb], &da)[0]["group"]
        .as_str()
        .expect("group id")
        .to_owned();
    cli(&["group", "send", &group, "before cyd 你好"], &da);
    b.wait_for("the first text at bob", |v| has_text(v, "before cyd"));

    // cyd joins: the change alone makes the group there; the rest comes by
    // catch-up.
    cli(&["group", "add", &group, "cyd"], &da);
    c.wait_for("the first text at cyd", |v| has_text(v, "before cyd 你好"));
    cli(&["group", "send", &group, "with cyd"], &da);
    b.wait_for("with cyd at bob", |v| has_text(v, "with cyd"));
    c.wait_for("with cyd at cyd", |v| has_text(v, "with cyd"));
    // cyd writes to the group; bob (who learnt of cyd from the change) takes it.
    cli(&["group", "send", &group, "cyd here"], &dc);
    b.wait_for("cyd's text at bob", |v| {
        has_text(v, "cyd here") && v["message"]["sender"] == idc.as_str()
    });
    let members = |dir: &Path| -> Vec<String> {
        let list = cli(&["group", "list"], dir);
        let g = list
            .iter()
            .find(|g| g["id"] == group.as_str())
            .expect("group");
        let mut m: Vec<String> = g["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        m.sort();
        m
    };
    let mut all = vec![ida.clone(), idb.clone(), idc.clone()];
    all.sort();
    assert_eq!(members(&dc), all, "cyd's view");
    assert_eq!(members(&db), all, "bob's view");

    // bob is removed: he learns it, and hears nothing after.
    cli(&["group", "remove", &group, "bob"], &da);
    b.wait_for("bob's removal", |v| {
        v["event"] == "message"
            && v["message"]["kind"] == "group_change"
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("\"remove\":[\""))
    });
    cli(&["group", "send", &group, "after bob"], &da);
    c.wait_for("after bob at cyd", |v| has_text(v, "after bob"));
    let mut two = vec![ida.clone(), idc.clone()];
    two.sort();
    assert_eq!(members(&db), two, "bob's view after");
    // bob cannot write to it any more.
    let out = std::process::Command::new(super::support::confab())
        .args(["p2p", "group", "send", &group, "still here?", "--data-dir"])
        .arg(&db)
        .env("CONFAB_LOG", "warn")
        .output()
        .expect("run");
    assert!(!out.status.success(), "a removed member's send is refused");
    // Only ann's outbox could have reached him: nothing for bob is queued.
    let status = cli(&["status"], &da).remove(0);
    let pending_bob = status["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .find(|c| c["peer_id"] == idb.as_str())
        .map(|c| c["pending"].as_u64().unwrap_or(99));
    assert_eq!(pending_bob, Some(0));
    let at_b: Vec<String> = cli(&["group", "history", &group], &db)
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect();
    assert!(!at_b.iter().any(|t| t.contains("after bob")), "{at_b:?}");
    drop((a, c));
}
