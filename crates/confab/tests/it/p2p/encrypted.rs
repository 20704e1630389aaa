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

#[test]
fn an_encrypted_text_to_an_offline_contact_waits_for_its_keys_in_the_running_listener() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let ida = peer_id(&da);
    let args = [
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    let mut a = Peer::start(None, "ann", &da, &args);
    a.wait_listening();
    // bob has never been online: ann knows his key, not his address.
    let bob = cli(&["id", "--name", "bob"], &db)[0]["link"]
        .as_str()
        .expect("link")
        .to_owned();
    cli(&["add", &bob], &da);

    // Through ann's listener: no keys yet, so the text waits, encrypted
    // later and never sent in the clear.
    let text = "离线时写的：明天见";
    let sent = cli(&["send", "--encrypted", "bob", text, "--wait", "1"], &da).remove(0);
    assert_eq!(sent["delivered"], false, "{sent}");
    assert!(
        sent["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("waiting for keys")),
        "{sent}"
    );
    let waiting = cli(&["history", "--encrypted", "bob"], &da);
    assert!(
        waiting
            .iter()
            .any(|m| m["waiting"].is_string()
                && m["body"].as_str().is_some_and(|b| b.contains(text))),
        "{waiting:#?}"
    );

    // bob comes online and adds ann: her listener sends what waited.
    let mut b = Peer::start(None, "bob", &db, &args);
    b.wait_listening();
    cli(&["add", &link(&da)], &db);
    b.wait_for("the message that waited", |v| {
        v["event"] == "message"
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains(text))
            && v["message"]["sender"] == ida.as_str()
    });
    a.wait_for("waiting_sent", |v| {
        v["event"] == "waiting_sent" && v["client_msg_id"] == sent["client_msg_id"]
    });
    assert!(cli(&["history", "--encrypted", "bob"], &da)
        .iter()
        .all(|m| m.get("waiting").is_none()));

    // The rest of the encrypted commands go through the listener too.
    let again = cli(
        &["send", "--encrypted", "bob", "又一条", "--wait", "20"],
        &da,
    )
    .remove(0);
    assert_eq!(again["delivered"], true, "{again}");
    assert_eq!(again["encrypted"], true, "{again}");
    let made = cli(&["group", "create", "--encrypted", "周末", "bob"], &da).remove(0);
    assert_eq!(made["encrypted"], true, "{made}");
    let group = made["group"].as_str().expect("group").to_owned();
    let said = cli(&["group", "send", &group, "周六爬山"], &da).remove(0);
    assert_eq!(said["encrypted"], true, "{said}");
    b.wait_for("the encrypted group message", |v| {
        v["event"] == "message"
            && v["message"]["conversation_id"] == group.as_str()
            && v["message"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("周六爬山"))
    });
    a.stop();
    b.stop();
    let history = cli(&["history", "--encrypted", &ida], &db);
    let texts: Vec<_> = history
        .iter()
        .filter(|m| m["encrypted"] == true && m["kind"] == "text")
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(texts.len(), 2, "{history:#?}");
    assert!(texts[0].contains(text) && texts[1].contains("又一条"));
}
