//! `confab p2p send --encrypted` between real processes on 127.0.0.1: the
//! sender (no listener) asks the listening contact for its KeyPackage,
//! makes the encrypted direct conversation and sends; the contact's
//! `listen` prints the message decrypted and `history --encrypted` shows
//! it marked `encrypted`, while the plain conversation stays empty.

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
    b.stop();
    let history = cli(&["history", "--encrypted", &ida], &db);
    let texts: Vec<_> = history
        .iter()
        .filter(|m| m["encrypted"] == true && m["kind"] == "text")
        .collect();
    assert_eq!(texts.len(), 1, "{history:#?}");
    assert!(texts[0]["body"].as_str().is_some_and(|b| b.contains(text)));
    // The sender keeps its own plaintext; the plain conversation is untouched.
    let mine = cli(&["history", "--encrypted", "bob"], &da);
    assert!(mine
        .iter()
        .any(|m| m["encrypted"] == true && m["body"].as_str().is_some_and(|b| b.contains(text))));
    assert!(cli(&["history", &ida], &db)
        .iter()
        .all(|m| m["kind"] != "text"));
}
