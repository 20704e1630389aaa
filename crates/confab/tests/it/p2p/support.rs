//! Harness for the peer-to-peer tests: network namespaces the test makes
//! itself (a switch namespace holding a bridge, one namespace per peer on a
//! veth pair), removed on drop even when the test fails; and `confab p2p`
//! processes whose output lines are read as events with a timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `confab` binary under test.
pub fn confab() -> &'static str {
    env!("CARGO_BIN_EXE_confab")
}

/// True when the test may build namespaces (root); otherwise prints why it
/// skips.
pub fn can_build_namespaces(test: &str) -> bool {
    // SAFETY-free check: `id -u` rather than libc.
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        println!("skipping {test}: building network namespaces needs root (CI runs as root)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("skipping {test}: the `ip` tool (iproute2) is missing");
        return false;
    }
    sweep_stale_namespaces();
    true
}

pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A unique tag for namespace names: `-<pid in hex>-<serial>`, so a later
/// run can tell namespaces left by a killed test process (see
/// [`sweep_stale_namespaces`]).
pub fn tag() -> String {
    let n = SERIAL.fetch_add(1, Ordering::SeqCst);
    format!("-{:x}-{n}", std::process::id())
}

/// Deletes the `cf…-<pid>-<n>` namespaces (and with them their veths and
/// their routers' iptables rules) whose test process is gone: a test run
/// killed with SIGKILL cannot run its `Drop`s. Namespaces of running tests
/// (other processes included) are left alone.
pub fn sweep_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with("cf") {
            continue;
        }
        let mut parts = name.rsplitn(3, '-');
        let (Some(serial), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (serial.parse::<u32>(), u32::from_str_radix(pid, 16)) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// A LAN: a bridge in its own namespace and one namespace per host.
pub struct Lan {
    pub switch: String,
    pub hosts: Vec<String>,
    pub subnet: u8,
}

impl Lan {
    /// `hosts` namespaces on 10.<subnet>.0.0/24 (host i has 10.<subnet>.0.<i+1>).
    pub fn new(hosts: usize, subnet: u8) -> Lan {
        let t = tag();
        let mut lan = Lan {
            switch: format!("cfsw{t}"),
            hosts: Vec::new(),
            subnet,
        };
        run(&["ip", "netns", "add", &lan.switch]);
        run(&[
            "ip",
            "-n",
            &lan.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        run(&["ip", "-n", &lan.switch, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = format!("cfh{i}{t}");
            run(&["ip", "netns", "add", &ns]);
            lan.hosts.push(ns.clone());
            let port = format!("p{i}");
            run(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan.switch,
            ]);
            run(&[
                "ip",
                "-n",
                &lan.switch,
                "link",
                "set",
                &port,
                "master",
                "br0",
            ]);
            run(&["ip", "-n", &lan.switch, "link", "set", &port, "up"]);
            let addr = format!("{}/24", lan.ip(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            // Multicast (mDNS) leaves through eth0.
            run(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "eth0",
            ]);
        }
        lan
    }

    /// Host i's address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.subnet, i + 1)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends (and their peers).
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A running `confab p2p listen --json` (inside a namespace or not), its
/// output lines parsed as JSON events.
pub struct Peer {
    pub name: String,
    pub data_dir: PathBuf,
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Peer {
    /// Starts `confab p2p listen` in `netns` (None: this namespace).
    pub fn start(netns: Option<&str>, name: &str, data_dir: &Path, extra: &[String]) -> Peer {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, confab()]);
                c
            }
            None => Command::new(confab()),
        };
        cmd.args(["p2p", "listen", "--json", "--name", name, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            // P2P_PEER_LOG=debug,libp2p_dcutr=debug to see a peer's swarm.
            .env(
                "CONFAB_LOG",
                std::env::var("P2P_PEER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn confab p2p listen");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Peer {
            name: name.into(),
            data_dir: data_dir.into(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for an event matching `pred` (events seen before count too).
    pub fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    if std::env::var_os("P2P_TEST_DEBUG").is_some() {
                        eprintln!("{} {v}", self.name);
                    }
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}; saw {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Like `wait_for`, but gives up after `within` and returns `None`.
    pub fn try_wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.lines.recv_timeout(left).ok()?;
            if std::env::var_os("P2P_TEST_DEBUG").is_some() {
                eprintln!("{} {v}", self.name);
            }
            self.seen.push(v.clone());
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// Stops it as a user does (SIGTERM: it closes its connections, so the
    /// relay and its contacts hear of it), killing it after 10 s.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to listen, then returns.
    pub fn wait_listening(&mut self) {
        self.wait_for("listening", |v| v["event"] == "listening");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `confab p2p` command and parses its stdout as JSON (one value,
/// or one per line).
pub fn cli(args: &[&str], data_dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(confab())
        .arg("p2p")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--json")
        .env("CONFAB_LOG", "warn")
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

/// The device's PeerId (made on first use).
pub fn peer_id(data_dir: &Path) -> String {
    cli(&["id"], data_dir)[0]["peer_id"]
        .as_str()
        .expect("peer_id")
        .to_owned()
}

/// client_msg_ids of a history, in order.
pub fn history_ids(contact: &str, data_dir: &Path) -> Vec<String> {
    cli(&["history", contact], data_dir)
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| m["client_msg_id"].as_str().expect("id").to_owned())
        .collect()
}

/// Namespaces a test made, deleted on drop (their veths go with them).
#[derive(Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Makes a namespace with `lo` up.
    pub fn add(&mut self, name: &str) -> String {
        let ns = format!("{name}{}", tag());
        run(&["ip", "netns", "add", &ns]);
        self.0.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair `a_if` in `a` with `a_ip`, `b_if` in `b` with `b_ip` (CIDR).
    pub fn link(
        &self,
        a: &str,
        a_if: &str,
        a_ip: Option<&str>,
        b: &str,
        b_if: &str,
        b_ip: Option<&str>,
    ) {
        run(&[
            "ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        for (ns, ifname, ip) in [(a, a_if, a_ip), (b, b_if, b_ip)] {
            if let Some(ip) = ip {
                run(&["ip", "-n", ns, "addr", "add", ip, "dev", ifname]);
            }
            run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
