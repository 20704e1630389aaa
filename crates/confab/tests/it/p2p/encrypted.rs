//! `confab p2p send --encrypted` between real processes on 127.0.0.1: the
//! sender (no listener) asks the listening contact for its KeyPackage,
//! makes the encrypted direct conversation and sends; the contact's
//! `listen` prints the message decrypted and `history --encrypted` shows
//! it marked `encrypted`, while the plain conversation stays empty; an
//! encrypted group made by `group create --encrypted` carries `group send`
//! encrypted.

use std::path::Path;

use super::support::{cli, peer_id, Peer};

fn link(dir: &Path) -> String {
    cli(&["id"], dir)[0]["link"]
        .as_str()
        .expect("link")
        .to_owned()
}

#[test]
fn an_encrypted_message_from_the_cli_is_decrypted_by_the_listening_contact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let ida = peer_id(&da);
    let args = [
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    let mut b = Peer::start(None, "bob", &db, &args);
    b.wait_listening();
    cli(&["add", &link(&db)], &da);
    cli(&["add", &link(&da)], &db);

    let text = "我们明天下午开会";
    let sent = cli(
        &[
            "send",
            "--encrypted",
            "bob",
            text,
            "--wait",
            "20",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        &da,
    )
    .remove(0);
    assert_eq!(sent["encrypted"], true, "{sent}");
    assert_eq!(sent["delivered"], true, "{sent}");
    let conv = sent["conversation_id"].as_str().expect("conv").to_owned();
    assert!(conv.starts_with("dme-"), "{conv}");
    b.wait_for("the decrypted message", |v| {
        v["event"] == "message"
            && v["message"]["kind"] == "text"
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(text))
            && v["message"]["sender"] == ida.as_str()
    });
    // An encrypted group with bob, and a message in it.
    let common = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
    let mut create = vec!["group", "create", "--encrypted", "plans", "bob"];
    create.extend(common);
    let made = cli(&create, &da).remove(0);
    assert_eq!(made["encrypted"], true, "{made}");
    let group = made["group"].as_str().expect("group").to_owned();
    let mut send = vec!["group", "send", &group, "周五见"];
    send.extend(common);
    cli(&send, &da);
    // Without a listener `group send` only queues: a's listener delivers.
    let mut a = Peer::start(None, "ann", &da, &args);
    b.wait_for("the decrypted group message", |v| {
        v["event"] == "message"
            && v["message"]["conversation_id"] == group.as_str()
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("周五见"))
    });
    a.stop();
    let mut again = vec!["send", "--encrypted", "bob", "again", "--wait", "20"];
    again.extend(common);
    cli(&again, &da);
    b.stop();
    let history = cli(&["history", "--encrypted", &ida], &db);
    let texts: Vec<_> = history
        .iter()
        .filter(|m| m["encrypted"] == true && m["kind"] == "text")
        .collect();
    assert_eq!(texts.len(), 2, "{history:#?}");
    assert!(texts[0]["body"].as_str().is_some_and(|b| b.contains(text)));
    assert!(texts[1]["body"]
        .as_str()
        .is_some_and(|b| b.contains("again")));
    // The sender keeps its own plaintext; the plain conversation is untouched.
    let mine = cli(&["history", "--encrypted", "bob"], &da);
    assert!(mine
        .iter()
        .any(|m| m["encrypted"] == true && m["body"].as_str().is_some_and(|b| b.contains(text))));
    assert!(cli(&["history", &ida], &db)
        .iter()
        .all(|m| m["kind"] != "text"));
}
