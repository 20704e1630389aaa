//! Across NATs: a "public" namespace runs `confab serve --p2p-listen`; two
//! home namespaces sit each behind its own NAT router namespace (iptables
//! MASQUERADE). The peers reach each other through the relay and try to
//! upgrade by hole punching (DCUtR); how often it upgraded is printed, not
//! asserted. 5 attempts by default (each restarts both peers, ~9 s);
//! `P2P_NAT_ATTEMPTS=20` for the full measurement. Then one peer is offline and gets its messages
//! from the server's mailbox when it returns, exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::support::{
    can_build_namespaces, cli, history_ids, peer_id, run, Namespaces, Peer, WAIT,
};

struct World {
    ns: Namespaces,
    public: String,
    homes: [String; 2],
}

/// internet bridge: server 10.201.0.1, routers 10.201.0.11/.12;
/// home i: host 192.168.i.2 behind router i (192.168.i.1), MASQUERADE.
fn build() -> World {
    let mut ns = Namespaces::default();
    let inet = ns.add("cfin");
    run(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"]);
    run(&["ip", "-n", &inet, "link", "set", "br0", "up"]);
    let public = ns.add("cfpub");
    ns.link(&public, "eth0", Some("10.201.0.1/24"), &inet, "pub", None);
    run(&["ip", "-n", &inet, "link", "set", "pub", "master", "br0"]);
    let mut homes = Vec::new();
    for i in 1..=2 {
        let router = ns.add(&format!("cfr{i}"));
        let home = ns.add(&format!("cfho{i}"));
        let wan = format!("10.201.0.1{i}/24");
        ns.link(&router, "wan", Some(&wan), &inet, &format!("r{i}"), None);
        run(&[
            "ip",
            "-n",
            &inet,
            "link",
            "set",
            &format!("r{i}"),
            "master",
            "br0",
        ]);
        let lan_ip = format!("192.168.{i}.1/24");
        let host_ip = format!("192.168.{i}.2/24");
        ns.link(&router, "lan", Some(&lan_ip), &home, "eth0", Some(&host_ip));
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ]);
        let gw = format!("192.168.{i}.1");
        run(&["ip", "-n", &home, "route", "add", "default", "via", &gw]);
        homes.push(home);
    }
    World {
        ns,
        public,
        homes: [homes[0].clone(), homes[1].clone()],
    }
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(world: &World, data_dir: &std::path::Path) -> (Server, String) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &world.public,
            super::support::confab(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--p2p-listen",
            "/ip4/10.201.0.1/tcp/4001",
            "--p2p-listen",
            "/ip4/10.201.0.1/udp/4001/quic-v1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("CONFAB_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Peers use the relay over QUIC: their observed UDP mappings are what
    // hole punching through MASQUERADE needs.
    let relay = loop {
        let line = rx.recv_timeout(WAIT).expect("relay address");
        if let Some(a) = line.strip_prefix("confab p2p relay listening on ") {
            if a.contains(&std::env::var("P2P_NAT_RELAY").unwrap_or_else(|_| "quic".into())) {
                break a.to_owned();
            }
        }
    };
    (Server(child), relay)
}

fn args(relay: &str) -> Vec<String> {
    [
        "--no-mdns",
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--listen",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "--relay",
        relay,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn peers_behind_nats_meet_through_the_relay_punch_holes_and_use_the_mailbox() {
    if !can_build_namespaces(
        "peers_behind_nats_meet_through_the_relay_punch_holes_and_use_the_mailbox",
    ) {
        return;
    }
    if Command::new("iptables").arg("--version").output().is_err() {
        println!("skipping: iptables is missing (scripts/test installs it)");
        return;
    }
    let world = build();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_server, relay) = serve(&world, &tmp.path().join("server"));
    let (da, db) = (tmp.path().join("ann"), tmp.path().join("bob"));
    let (ida, idb) = (peer_id(&da), peer_id(&db));
    // Links with no reachable address: only the relay.
    cli(
        &["add", &format!("confab://{idb}?name=bob&relay={relay}")],
        &da,
    );
    cli(
        &["add", &format!("confab://{ida}?name=ann&relay={relay}")],
        &db,
    );

    let mut upgraded = 0;
    let attempts: usize = std::env::var("P2P_NAT_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for attempt in 0..attempts {
        let mut a = Peer::start(Some(&world.homes[0]), "ann", &da, &args(&relay));
        let mut b = Peer::start(Some(&world.homes[1]), "bob", &db, &args(&relay));
        a.wait_for("ann's reservation", |v| v["event"] == "reservation");
        b.wait_for("bob's reservation", |v| v["event"] == "reservation");
        let m = cli(
            &["send", "bob", &format!("attempt {attempt}"), "--wait", "20"],
            &da,
        )
        .remove(0);
        assert_eq!(m["delivered"], true, "attempt {attempt}: {m}");
        // DCUtR runs on the relayed connection; either side may report it.
        let done = |v: &serde_json::Value| {
            v["event"] == "hole_punch" || (v["event"] == "connected" && v["path"] == "direct")
        };
        let within = std::time::Duration::from_secs(10);
        let ok_of = |v: Option<serde_json::Value>| {
            v.is_some_and(|v| v["event"] == "connected" || v["ok"] == true)
        };
        let ok = ok_of(a.try_wait_for(within, done))
            || ok_of(b.try_wait_for(std::time::Duration::ZERO, done));
        if ok {
            upgraded += 1;
        }
        drop(a);
        drop(b);
    }
    println!("hole punching upgraded {upgraded} of {attempts} relayed connections to direct ones");

    // bob offline: ann's envelopes go to the mailbox; bob returns and gets them once.
    let mut a = Peer::start(Some(&world.homes[0]), "ann", &da, &args(&relay));
    a.wait_for("ann's reservation", |v| v["event"] == "reservation");
    let mut ids = Vec::new();
    for text in ["mail one", "mail two"] {
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
    drop(a);
    let mut b = Peer::start(Some(&world.homes[1]), "bob", &db, &args(&relay));
    for id in &ids {
        let id2 = id.clone();
        b.wait_for("mail", move |v| {
            v["event"] == "message" && v["message"]["client_msg_id"] == id2.as_str()
        });
    }
    let h = history_ids(&ida, &db);
    assert_eq!(h.len(), attempts + 2, "every message once: {h:?}");
    drop(world.ns);
}
