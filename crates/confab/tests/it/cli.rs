//! The command-line client against a real server: register, login (session
//! saved 0600), send, history, listen --json.

use std::process::Stdio;

use crate::support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn register_login_send_history_listen() {
    let app = spawn_app().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann_s, bob_s) = (tmp.path().join("ann.json"), tmp.path().join("bob.json"));
    for (name, session) in [("ann", &ann_s), ("bob", &bob_s)] {
        let (registered, logged_in) = cli_register_and_login(&app.base_url, session, name).await;
        assert!(registered.contains("registered"));
        assert!(logged_in.contains("logged in"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&ann_s)
            .expect("session file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "session file is private");
    }

    let mut listen = cli(&app.base_url, &bob_s);
    listen.args(["listen", "--json"]).stdout(Stdio::piped());
    let mut child = listen.spawn().expect("listen");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("line")
            .expect("read")
            .expect("open");
        if line.contains("sync_complete") {
            break;
        }
    }

    let mut send = cli(&app.base_url, &ann_s);
    send.args(["send", "bob", "hello from the cli", "--json"]);
    let sent: serde_json::Value = serde_json::from_str(cli_ok(send).await.trim()).expect("json");
    assert_eq!(sent["seq"], 1);

    let message = loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("line")
            .expect("read")
            .expect("open");
        let v: serde_json::Value = serde_json::from_str(&line).expect("each line is json");
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(message["body"]["text"], "hello from the cli");
    assert_eq!(message["seq"], 1);
    let _ = child.kill().await;

    let mut history = cli(&app.base_url, &bob_s);
    history.args(["history", "ann"]);
    let out = cli_ok(history).await;
    assert!(out.contains("ann: hello from the cli"), "{out}");

    let mut bad = cli(&app.base_url, &ann_s);
    bad.args(["send", "nobody-here", "hi"]);
    let out = bad.output().await.expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named"));
}
