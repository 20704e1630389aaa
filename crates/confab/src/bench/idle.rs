//! `confab bench idle`: N idle authenticated WebSocket connections, then the
//! server's resident memory per connection.
//!
//! This machine caps open files at 20,000 per process, so the client side
//! is spread over worker processes (`--per-process`), each holding its share
//! of connections open until the parent is done measuring.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use confab_sdk::Client;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::server::{rss_bytes, TargetArgs};
use super::ws::{dial, now_micros};

/// Flags of `confab bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open in all.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections per client process (each process may hold ~19,900 files).
    #[arg(long, default_value_t = 9000)]
    per_process: usize,
    /// Accounts to spread the connections over.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Seconds to hold the connections before measuring.
    #[arg(long, default_value_t = 3)]
    settle_s: u64,
}

/// Flags of the hidden worker.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Server base URL.
    #[arg(long)]
    server: String,
    /// Comma-separated access tokens to use round-robin.
    #[arg(long)]
    tokens: String,
    /// Connections to open.
    #[arg(long)]
    count: usize,
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let target = args.target.start().await?;
    let Some(pid) = target.pid else {
        bail!("bench idle needs --server-pid to read the server's memory")
    };
    let run = now_micros() % 1_000_000_000;
    let mut tokens = Vec::new();
    for i in 0..args.users.max(1) {
        let c = Client::new(&target.base_url);
        let name = format!("idle{run}u{i}");
        c.register(&name, "bench-password", None).await?;
        tokens.push(
            c.login(&name, "bench-password", Some("bench"))
                .await?
                .access_token,
        );
    }
    // Warm the server up with one connection so lazily allocated state is
    // not counted against the idle ones.
    let warm = dial(&target.base_url, &tokens[0]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid).context("reading server memory")?;

    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    let mut remaining = args.connections;
    while remaining > 0 {
        let count = remaining.min(args.per_process.max(1));
        remaining -= count;
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "bench",
                "idle-worker",
                "--server",
                &target.base_url,
                "--count",
                &count.to_string(),
                "--tokens",
                &tokens.join(","),
            ])
            .env("CONFAB_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("worker stdout")?;
        workers.push((child, BufReader::new(stdout).lines(), count));
    }
    let mut opened = 0usize;
    for (_, lines, _) in workers.iter_mut() {
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .context("worker did not report in 600 s")??
            .unwrap_or_default();
        opened += line
            .trim()
            .strip_prefix("open ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let after = rss_bytes(pid).context("reading server memory")?;
    let per_conn = if opened > 0 {
        after.saturating_sub(before) as f64 / opened as f64
    } else {
        0.0
    };
    println!(
        "{}",
        json!({
            "bench": "idle",
            "connections_requested": args.connections,
            "connections_open": opened,
            "server_rss_before_bytes": before,
            "server_rss_after_bytes": after,
            "server_bytes_per_connection": per_conn.round(),
        })
    );
    drop(warm);
    for (mut child, _, _) in workers {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    Ok(())
}

/// Opens `count` connections, prints `open N`, and holds them until stdin closes.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let tokens: Vec<&str> = args.tokens.split(',').filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        bail!("no tokens");
    }
    let mut conns = Vec::with_capacity(args.count);
    let mut failures = 0usize;
    for i in 0..args.count {
        match dial(&args.server, tokens[i % tokens.len()]).await {
            Ok(ws) => conns.push(ws),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("connection {i} failed: {e}");
                }
            }
        }
    }
    println!("open {}", conns.len());
    // Keep the sockets read (so pings are answered) until told to stop.
    let mut readers = Vec::with_capacity(conns.len());
    for ws in conns {
        readers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut ws = ws;
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    for r in readers {
        r.abort();
    }
    Ok(())
}
