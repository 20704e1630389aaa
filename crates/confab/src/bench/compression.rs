//! `confab bench compression`: what WebSocket permessage-deflate saves and
//! costs. The same pairs of SDK raw connections send the same messages
//! twice, once offering permessage-deflate and once not, through a byte
//! counting TCP proxy in this process; it prints wire bytes per message and
//! the CPU time per message of the server and of this process (clients and
//! proxy) for both runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use confab_sdk::proto::{ClientFrame, MessageKind, ServerFrame};
use confab_sdk::Compression;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::{cpu_micros, TargetArgs};

/// Flags of `confab bench compression`.
#[derive(Debug, Args)]
pub struct CompressionArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Messages each sender sends per run.
    #[arg(long, default_value_t = 500)]
    messages: u64,
    /// Bytes of text in each message (English and Chinese words, as in a
    /// chat; frames under the server's `ws.compression_min_bytes` go
    /// uncompressed).
    #[arg(long, default_value_t = 1000)]
    text_bytes: usize,
}

/// Bytes through the proxy, both directions.
#[derive(Default)]
struct Counter {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counter {
    fn total(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
}

/// A TCP proxy to `upstream` that counts bytes; returns its address.
async fn counting_proxy(upstream: String, counter: Arc<Counter>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = pump(cr, sw, counter.clone(), true);
                let down = pump(sr, cw, counter, false);
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(addr.to_string())
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<Counter>,
    up: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let c = if up { &counter.up } else { &counter.down };
        c.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Chat-like text of about `bytes` bytes, different for each `seed`.
fn chat_text(bytes: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "meeting",
        "tomorrow",
        "the",
        "report",
        "is",
        "ready",
        "can",
        "you",
        "check",
        "我们",
        "明天",
        "开会",
        "报告",
        "已经",
        "准备好了",
        "请",
        "看一下",
        "谢谢",
        "lunch",
        "at",
        "noon",
        "sounds",
        "good",
        "好的",
        "没问题",
        "photo",
        "from",
        "the",
        "trip",
        "旅行",
        "照片",
        "发给你",
        "weekend",
        "plans",
        "周末",
        "计划",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
        s.push(' ');
    }
    s
}

/// One run's numbers.
struct Run {
    wire_bytes_per_msg: f64,
    server_cpu_us_per_msg: Option<f64>,
    client_cpu_us_per_msg: Option<f64>,
    compressed: bool,
    received: u64,
}

async fn run_once(
    args: &CompressionArgs,
    ws_url: &str,
    server_pid: Option<u32>,
    accounts: &[(String, String, i64)],
    counter: &Counter,
    compression: Compression,
) -> anyhow::Result<Run> {
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut compressed = true;
    for (s_token, r_token, conv) in accounts {
        let mut r = confab_sdk::raw::connect_with(ws_url, Some(r_token), compression).await?;
        let s = confab_sdk::raw::connect_with(ws_url, Some(s_token), compression).await?;
        compressed &= r.is_compressed() && s.is_compressed();
        r.next_frame_within(std::time::Duration::from_secs(10))
            .await
            .context("hello")?;
        receivers.push(r);
        senders.push((s, *conv));
    }
    let bytes_before = counter.total();
    let server_before = server_pid.and_then(cpu_micros);
    let own_before = cpu_micros(std::process::id());
    let started = Instant::now();
    let n = args.messages;
    let mut tasks = Vec::new();
    for (i, (mut s, conv)) in senders.into_iter().enumerate() {
        let text_bytes = args.text_bytes;
        tasks.push(tokio::spawn(async move {
            for k in 0..n {
                let frame = ClientFrame::Send {
                    client_msg_id: format!("c{i}-{k}-{}", super::ws::now_micros()),
                    conversation_id: conv,
                    kind: MessageKind::Text,
                    body: json!({ "text": chat_text(text_bytes, (i as u64) << 32 | k) }),
                };
                s.send_frame(&frame).await?;
            }
            let mut acked = 0;
            while acked < n {
                match s
                    .next_frame_within(std::time::Duration::from_secs(30))
                    .await?
                {
                    ServerFrame::Ack { .. } | ServerFrame::Error { .. } => acked += 1,
                    _ => {}
                }
            }
            anyhow::Ok(0u64)
        }));
    }
    for mut r in receivers {
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                if let ServerFrame::Message(_) = r
                    .next_frame_within(std::time::Duration::from_secs(30))
                    .await?
                {
                    got += 1;
                }
            }
            anyhow::Ok(got)
        }));
    }
    let mut received = 0;
    for t in tasks {
        received += t.await??;
    }
    let _elapsed = started.elapsed();
    let own_after = cpu_micros(std::process::id());
    let server_after = server_pid.and_then(cpu_micros);
    let bytes = counter.total() - bytes_before;
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if received > 0 => {
            Some(((b.saturating_sub(a)) as f64 / received as f64 * 10.0).round() / 10.0)
        }
        _ => None,
    };
    Ok(Run {
        wire_bytes_per_msg: (bytes as f64 / received.max(1) as f64).round(),
        server_cpu_us_per_msg: per(server_before, server_after),
        client_cpu_us_per_msg: per(own_before, own_after),
        compressed,
        received,
    })
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(args: CompressionArgs) -> anyhow::Result<()> {
    let target = args.target.start().await?;
    let pairs = args.pairs.max(1);
    eprintln!("setting up {pairs} pairs against {}", target.base_url);
    let accounts = super::pairs::setup(&target.base_url, pairs)
        .await
        .context("account setup")?;
    let upstream = target
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let counter = Arc::new(Counter::default());
    let proxy = counting_proxy(upstream, counter.clone()).await?;
    let ws_url = format!("ws://{proxy}/v1/ws");
    let mut runs = Vec::new();
    for compression in [Compression::Off, Compression::Offer] {
        eprintln!("sending with {compression:?}");
        runs.push(run_once(&args, &ws_url, target.pid, &accounts, &counter, compression).await?);
    }
    let show = |r: &Run| {
        json!({
            "compressed": r.compressed,
            "received": r.received,
            "wire_bytes_per_msg": r.wire_bytes_per_msg,
            "server_cpu_us_per_msg": r.server_cpu_us_per_msg,
            "client_cpu_us_per_msg": r.client_cpu_us_per_msg,
        })
    };
    let (off, on) = (&runs[0], &runs[1]);
    let saved = 1.0 - on.wire_bytes_per_msg / off.wire_bytes_per_msg.max(1.0);
    let line = json!({
        "bench": "compression",
        "pairs": pairs,
        "messages_per_sender": args.messages,
        "text_bytes": args.text_bytes,
        "off": show(off),
        "on": show(on),
        "bytes_saved_pct": (saved * 1000.0).round() / 10.0,
        "server_cpu_us_per_msg_added": match (on.server_cpu_us_per_msg, off.server_cpu_us_per_msg) {
            (Some(a), Some(b)) => Some(((a - b) * 10.0).round() / 10.0),
            _ => None,
        },
    });
    println!("{line}");
    Ok(())
}
