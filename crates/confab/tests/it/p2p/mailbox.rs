//! A Confab server as a P2P mailbox (`confab serve --p2p-listen`, real
//! processes on 127.0.0.1): a peer whose contact is offline leaves the
//! signed envelopes there; the server restarts (the mailbox survives);
//! the contact comes back, proves its PeerId, and gets each message once.
//! The peer with `--relay` also registers at the server's rendezvous point
//! (`status --json` shows it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::support::{cli, confab, history_ids, peer_id, Peer, WAIT};

struct Server {
    child: Child,
    relay: String,
    http: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(confab())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("CONFAB_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn confab serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on stdout.
                    continue;
                }
            }
        });
        // Both lines come at startup, in either order.
        let (mut relay, mut http) = (None, None);
        while relay.is_none() || http.is_none() {
            let line = rx
                .recv_timeout(WAIT)
                .expect("confab serve printed its addresses");
            if let Some(addr) = line.strip_prefix("confab p2p relay listening on ") {
                relay = Some(addr.to_owned());
            } else if let Some(url) = line.strip_prefix("confab listening on ") {
                http = Some(url.to_owned());
            }
        }
        let (relay, http) = (relay.unwrap_or_default(), http.unwrap_or_default());
        Server { child, relay, http }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_offline_peer_gets_its_messages_from_the_mailbox_exactly_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ds, da, db) = (
        tmp.path().join("server"),
        tmp.path().join("ann"),
        tmp.path().join("bob"),
    );
    let server = Server::start(&ds);
    let (ida, idb) = (peer_id(&da), peer_id(&db));
    // bob is offline: his link names an address nobody listens on.
    let lb = format!("confab://{idb}?name=bob&addr=/ip4/127.0.0.1/tcp/9");
    cli(&["add", &lb], &da);
    let la = format!("confab://{ida}?name=ann");
    cli(&["add", &la], &db);

    let args = |relay: &str| {
        vec![
            "--no-mdns".to_owned(),
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".to_owned(),
            "--relay".to_owned(),
            relay.to_owned(),
        ]
    };
    let mut a = Peer::start(None, "ann", &da, &args(&server.relay));
    a.wait_listening();
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let m = cli(&["send", "bob", text, "--wait", "0"], &da).remove(0);
        ids.push(m["client_msg_id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let id2 = id.clone();
        a.wait_for("a mailbox delivery", move |v| {
            v["event"] == "delivered"
                && v["path"] == "mailbox"
                && v["client_msg_id"] == id2.as_str()
        });
    }
    // The relay counts ann's reservation on /metrics.
    let a2 = a.wait_for("the reservation", |v| v["event"] == "reservation");
    assert!(a2["relay"].is_string());
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", server.http)])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !metrics.is_empty() {
        assert!(
            metrics.contains("confab_p2p_relay_reservations 1"),
            "{metrics}"
        );
    }
    // And ann registered at its rendezvous point, relayed address included.
    let reg = a.wait_for("the rendezvous registration", |v| {
        v["event"] == "rendezvous_registered"
    });
    assert_eq!(reg["namespace"], format!("confab/{ida}"));
    let live = cli(&["status"], &da).remove(0);
    let rdv = &live["rendezvous"];
    assert_eq!(rdv["state"], "registered", "{live}");
    assert_eq!(rdv["point"], a2["relay"], "{live}");
    assert!(rdv["registrations"].as_u64() >= Some(1), "{live}");
    assert!(
        rdv["addrs"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("/p2p-circuit")))),
        "{live}"
    );
    a.kill9();
    let status = cli(&["status"], &da).remove(0);
    assert_eq!(
        status["contacts"][0]["pending"], 0,
        "the outbox handed them to the mailbox: {status}"
    );

    // The server restarts (new port, same key and mailbox file).
    drop(server);
    let server = Server::start(&ds);
    let mut b = Peer::start(None, "bob", &db, &args(&server.relay));
    for id in &ids {
        let id2 = id.clone();
        b.wait_for("a message from the mailbox", move |v| {
            v["event"] == "message"
                && v["message"]["client_msg_id"] == id2.as_str()
                && v["message"]["via"] == "mailbox"
        });
    }
    assert_eq!(history_ids(&ida, &db), ids);
    // bob again: the mailbox deleted them after his ack, nothing comes twice.
    b.kill9();
    let mut b = Peer::start(None, "bob", &db, &args(&server.relay));
    let fetched = b.wait_for("a mailbox check", |v| v["event"] == "mailbox_fetched");
    assert_eq!(fetched["count"], 0, "acked envelopes were deleted");
    let check = cli(&["send", "ann", "ping", "--wait", "0"], &db).remove(0);
    assert!(check["client_msg_id"].is_string());
    assert_eq!(
        history_ids(&ida, &db).len(),
        3,
        "two from the mailbox, once each, and bob's ping"
    );
}

/// Runs `confab p2p ARGS` with the password in the environment; answers
/// its JSON lines.
fn cli_with_password(args: &[&str], data_dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(confab())
        .arg("p2p")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--json")
        .env("CONFAB_LOG", "warn")
        .env("CONFAB_PASSWORD", crate::support::PASSWORD)
        .output()
        .expect("run confab");
    assert!(
        out.status.success(),
        "confab p2p {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn a_peer_registered_with_a_server_account_is_found_by_username() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ds, da, db) = (
        tmp.path().join("server"),
        tmp.path().join("ann"),
        tmp.path().join("bob"),
    );
    let server = Server::start(&ds);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (name, shown) in [("ann", "Ann"), ("bob", "鲍勃")] {
        rt.block_on(confab_sdk::Client::new(&server.http).register(
            name,
            crate::support::PASSWORD,
            Some(shown),
        ))
        .expect("register the account");
    }
    let (ida, idb) = (peer_id(&da), peer_id(&db));

    // Each peer registers its key as a device of its account.
    let reg = cli_with_password(&["register", "bob", "--server", &server.http], &db).remove(0);
    assert_eq!(reg["peer_id"], idb.as_str());
    let reg = cli_with_password(&["register", "ann", "--server", &server.http], &da).remove(0);
    assert_eq!(reg["peer_id"], ida.as_str());
    // The key is the device's on the server (what E2EE uses too).
    let devices = rt
        .block_on(async {
            let c = confab_sdk::Client::new(&server.http);
            c.login("ann", crate::support::PASSWORD, None).await?;
            let bob = c
                .search_users("bob")
                .await?
                .into_iter()
                .find(|u| u.username == "bob")
                .map(|u| u.id)
                .unwrap_or_default();
            c.devices(bob).await
        })
        .expect("bob's devices");
    assert!(
        devices.iter().any(|d| d.public_key.is_some()),
        "{devices:?}"
    );

    // ann finds bob by username: his PeerId.
    let found = cli(&["find", "bob"], &da);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["peer_id"], idb.as_str());
    assert!(cli(&["status"], &da)[0]["contacts"]
        .as_array()
        .is_some_and(|c| c.is_empty()));

    // Bob runs with the server as relay (so he registers at its rendezvous
    // point); ann adds him from the server, with no address, and reaches
    // him there.
    let args = |relay: &str| {
        vec![
            "--no-mdns".to_owned(),
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".to_owned(),
            "--relay".to_owned(),
            relay.to_owned(),
        ]
    };
    let mut b = Peer::start(None, "鲍勃", &db, &args(&server.relay));
    b.wait_for("bob's rendezvous registration", |v| {
        v["event"] == "rendezvous_registered"
    });
    let added = cli(&["find", "bob", "--add", "--relay", &server.relay], &da);
    assert_eq!(added[0]["peer_id"], idb.as_str());
    assert_eq!(added[0]["name"], "鲍勃");
    assert!(added[0]["addrs"].as_array().is_some_and(|a| a.is_empty()));
    // Bob accepts envelopes from contacts: he adds ann the same way.
    cli(&["find", "ann", "--add"], &db);
    let mut a = Peer::start(None, "ann", &da, &args(&server.relay));
    a.wait_listening();
    let sent = cli(&["send", "鲍勃", "通过服务器找到你了", "--wait", "0"], &da).remove(0);
    let id = sent["client_msg_id"].as_str().expect("id").to_owned();
    let id2 = id.clone();
    b.wait_for("ann's message", move |v| {
        v["event"] == "message" && v["message"]["client_msg_id"] == id2.as_str()
    });
    assert_eq!(history_ids(&ida, &db), [id]);
    a.stop();
    b.stop();
}
