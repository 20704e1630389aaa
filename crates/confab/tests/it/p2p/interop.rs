//! Interop with another libp2p implementation: a js-libp2p node
//! (interop/deliver.mjs: TCP, Noise, Yamux, identify) dials a `confab p2p
//! listen` process, completes Noise and identify, and delivers one envelope
//! it signed itself over /confab/msg/1; the Confab peer stores and acks it.

use std::path::PathBuf;
use std::process::Command;

use super::support::{cli, history_ids, peer_id, Peer};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

fn node(args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(interop_dir().join("deliver.mjs"))
        .args(args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn a_js_libp2p_node_delivers_an_envelope_it_signed() {
    if Command::new("node").arg("--version").output().is_err()
        || !interop_dir().join("node_modules/libp2p").exists()
    {
        println!("skipping: needs node and `npm ci --prefix interop` (scripts/test does both)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("js.key");
    let key_s = key.display().to_string();
    let js = node(&["id", &key_s])["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned();
    let dc = tmp.path().join("confab");
    let me = peer_id(&dc);
    cli(&["add", &format!("confab://{js}?name=js")], &dc);
    let args = [
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    let mut peer = Peer::start(None, "confab", &dc, &args);
    let listening = peer.wait_for("listening", |v| v["event"] == "listening");
    let addr = listening["addr"].as_str().expect("addr").to_owned();
    assert!(addr.ends_with(&me));

    let out = node(&["send", &key_s, &addr, "hello from js-libp2p"]);
    assert_eq!(out["ack"]["ok"], true, "{out}");
    assert_eq!(out["ack"]["new"], true, "{out}");
    let agent = out["identified"]["agent"].as_str().unwrap_or_default();
    assert!(agent.starts_with("confab/"), "identify completed: {out}");
    let id = out["envelope"]["client_msg_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let id2 = id.clone();
    peer.wait_for("the js message", move |v| {
        v["event"] == "message" && v["message"]["client_msg_id"] == id2.as_str()
    });
    assert_eq!(history_ids(&js, &dc), vec![id]);
}
