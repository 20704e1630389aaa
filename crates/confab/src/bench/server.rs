//! The server under test: a `confab serve` child process started by the
//! bench (fresh temp data dir, free port), or an external one given by URL.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Where the server under test is.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Use this running server instead of starting one.
    #[arg(long)]
    pub server: Option<String>,
    /// PID of that server, to read its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Start a cluster of this many nodes instead of one embedded node:
    /// private PostgreSQL and NATS instances (temp dirs, free ports) and
    /// N `confab serve` processes on them. Connections spread over the nodes.
    #[arg(long, conflicts_with = "server")]
    pub cluster: Option<usize>,
}

/// A server for the benchmark; a child is killed when this is dropped.
pub struct Target {
    pub base_url: String,
    pub pid: Option<u32>,
    /// Every node's URL (one unless `--cluster`).
    pub urls: Vec<String>,
    /// Every node's PID, when known.
    pub pids: Vec<u32>,
    _children: Vec<tokio::process::Child>,
    _dirs: Vec<tempfile::TempDir>,
    _services: Option<(confab_testkit::Postgres, confab_testkit::Nats)>,
}

impl Target {
    /// CPU time used so far by every node, in microseconds.
    pub fn cpu_micros(&self) -> Option<u64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| cpu_micros(p)).sum()
    }

    /// CPU time used so far by the private PostgreSQL (postmaster and its
    /// backends) and nats-server of a `--cluster` run, in microseconds.
    pub fn services_cpu_micros(&self) -> Option<u64> {
        let (pg, nats) = self._services.as_ref()?;
        let pid_file = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).ok()?;
        let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let nats_port = format!("-p\0{}\0", nats.port());
        let mut total = 0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let is_pg = pid == postmaster || parent_pid(pid) == Some(postmaster);
            let is_nats = !is_pg
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("nats-server") && c.contains(&nats_port)
                    })
                    .unwrap_or(false);
            if is_pg || is_nats {
                total += cpu_micros(pid).unwrap_or(0);
            }
        }
        Some(total)
    }

    /// The URL of node `i`, round robin.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }
}

impl TargetArgs {
    /// Starts (or names) the server. A started one gets cheap password
    /// hashing and no send rate limit, so setup is quick and the rate limit
    /// does not cap the measurement.
    pub async fn start(&self) -> anyhow::Result<Target> {
        if let Some(url) = &self.server {
            let base_url = url.trim_end_matches('/').to_owned();
            return Ok(Target {
                urls: vec![base_url.clone()],
                base_url,
                pid: self.server_pid,
                pids: self.server_pid.into_iter().collect(),
                _children: Vec::new(),
                _dirs: Vec::new(),
                _services: None,
            });
        }
        let Some(n) = self.cluster else {
            let (child, url, dir) = spawn_node(&[]).await?;
            let pid = child.id();
            return Ok(Target {
                base_url: url.clone(),
                urls: vec![url],
                pid,
                pids: pid.into_iter().collect(),
                _children: vec![child],
                _dirs: vec![dir],
                _services: None,
            });
        };
        let pg = confab_testkit::Postgres::start()
            .await
            .context("starting a private PostgreSQL")?;
        let nats = confab_testkit::Nats::start()
            .await
            .context("starting a private nats-server")?;
        let (mut children, mut urls, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n.max(1) {
            let args = [
                "--database".to_owned(),
                pg.url(),
                "--bus".to_owned(),
                nats.url(),
                "--node-id".to_owned(),
                format!("bench-{i}"),
            ];
            let (child, url, dir) = spawn_node(&args).await?;
            children.push(child);
            urls.push(url);
            dirs.push(dir);
        }
        let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
        Ok(Target {
            base_url: urls[0].clone(),
            pid: pids.first().copied(),
            urls,
            pids,
            _children: children,
            _dirs: dirs,
            _services: Some((pg, nats)),
        })
    }
}

/// Starts one `confab serve` child with bench settings and extra flags.
async fn spawn_node(
    extra: &[String],
) -> anyhow::Result<(tokio::process::Child, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
            "--send-rate",
            "1000000",
            "--send-burst",
            "1000000",
            "--max-connections",
            "19900",
            // Load, not abuse: thousands of users from one address, many
            // connections each.
            "--registrations-per-hour",
            "100000000",
            "--max-connections-per-user",
            "100000",
            "--max-connections-per-device",
            "100000",
        ])
        .args(extra)
        .env("CONFAB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting confab serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("server did not start in 30 s")??
        .context("server exited")?;
    let Some(url) = line.strip_prefix("confab listening on ") else {
        bail!("unexpected server output {line:?}");
    };
    Ok((child, url.to_owned(), dir))
}

/// User + system CPU time of a process in microseconds (from /proc).
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// The parent of a process (from /proc).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a process in bytes (from /proc).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
