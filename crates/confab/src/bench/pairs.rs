//! `confab bench pairs`: N/2 sender/receiver pairs through the real server.
//!
//! Each sender sends into its own direct conversation with its receiver,
//! either keeping a window of W unacked sends (saturation) or at a fixed
//! total rate (latency). The send time rides in the body, so the receiver
//! measures end-to-end latency; it also checks order and counts repeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use confab_sdk::Client;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::server::TargetArgs;
use super::ws::{dial, now_micros, Ws};

/// Number of pairs in this run (for spreading fixed-rate senders).
static PAIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Flags of `confab bench pairs`.
#[derive(Debug, Args)]
pub struct PairsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections in all (half send, half receive).
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 500)]
    messages: u64,
    /// Unacked sends each sender keeps in flight (saturation mode).
    #[arg(long, default_value_t = 10, conflicts_with = "rate")]
    window: usize,
    /// Total send rate in messages per second (latency mode).
    #[arg(long)]
    rate: Option<f64>,
    /// Give up waiting for stragglers after this many seconds.
    #[arg(long, default_value_t = 30)]
    drain_s: u64,
}

#[derive(Default)]
struct SenderStats {
    sent: u64,
    acked: u64,
    errors: u64,
}

struct ReceiverStats {
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    latency: Histogram<u64>,
}

/// Sets up accounts in parallel: (sender token, receiver token, conversation).
pub(super) async fn setup(base: &str, pairs: usize) -> anyhow::Result<Vec<(String, String, i64)>> {
    let run = now_micros() % 1_000_000_000;
    let limit = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let base = base.to_owned();
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            let pw = "bench-password";
            let (s, r) = (Client::new(&base), Client::new(&base));
            let (sn, rn) = (format!("b{run}s{i}"), format!("b{run}r{i}"));
            s.register(&sn, pw, None).await?;
            r.register(&rn, pw, None).await?;
            let ss = s.login(&sn, pw, Some("bench")).await?;
            let rs = r.login(&rn, pw, Some("bench")).await?;
            let conv = s.direct_conversation(rs.user.id).await?;
            anyhow::Ok((ss.access_token, rs.access_token, conv.id))
        }));
    }
    let mut out = Vec::with_capacity(pairs);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(args: PairsArgs) -> anyhow::Result<()> {
    let pairs = (args.connections / 2).max(1);
    PAIRS.store(pairs, std::sync::atomic::Ordering::Relaxed);
    let target = args.target.start().await?;
    eprintln!("setting up {pairs} pairs against {}", target.base_url);
    let accounts = setup(&target.base_url, pairs)
        .await
        .context("account setup")?;

    let mut receivers = Vec::with_capacity(pairs);
    let mut senders = Vec::with_capacity(pairs);
    // In a cluster each pair spans two nodes: the sender on node i, the
    // receiver on node i + 1, so every message crosses the bus.
    for (i, (s_token, r_token, conv)) in accounts.iter().enumerate() {
        receivers.push(dial(target.url(i + 1), r_token).await?);
        senders.push((dial(target.url(i), s_token).await?, *conv));
    }
    eprintln!("{} connections open; sending", pairs * 2);

    let start_gate = Arc::new(Barrier::new(pairs * 2 + 1));
    let per_sender_interval = args
        .rate
        .map(|r| Duration::from_secs_f64(pairs as f64 / r.max(0.001)));
    let mut recv_tasks = Vec::new();
    for ws in receivers {
        let gate = start_gate.clone();
        let (expect, drain) = (args.messages, Duration::from_secs(args.drain_s));
        recv_tasks.push(tokio::spawn(async move {
            receive(ws, gate, expect, drain).await
        }));
    }
    let mut send_tasks = Vec::new();
    for (i, (ws, conv)) in senders.into_iter().enumerate() {
        let gate = start_gate.clone();
        let (n, window) = (args.messages, args.window.max(1));
        send_tasks.push(tokio::spawn(async move {
            send(ws, gate, i, conv, n, window, per_sender_interval).await
        }));
    }
    let cpu_before = target.cpu_micros();
    let services_before = target.services_cpu_micros();
    start_gate.wait().await;
    let started = Instant::now();

    let mut s = SenderStats::default();
    for t in send_tasks {
        let r = t.await?;
        s.sent += r.sent;
        s.acked += r.acked;
        s.errors += r.errors;
    }
    let mut received = 0;
    let mut duplicates = 0;
    let mut out_of_order = 0;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut last_receive = started;
    for t in recv_tasks {
        let (r, last) = t.await?;
        received += r.received;
        duplicates += r.duplicates;
        out_of_order += r.out_of_order;
        latency.add(&r.latency)?;
        last_receive = last_receive.max(last);
    }
    let elapsed = last_receive.duration_since(started).as_secs_f64().max(1e-9);
    let cpu_after = target.cpu_micros();
    let services_after = target.services_cpu_micros();
    let services_per_msg = match (services_before, services_after) {
        (Some(a), Some(b)) if received > 0 => Some((b.saturating_sub(a)) as f64 / received as f64),
        _ => None,
    };
    let cpu_per_msg = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if received > 0 => Some((b - a) as f64 / received as f64),
        _ => None,
    };
    let line = json!({
        "bench": "pairs",
        "nodes": target.urls.len(),
        "connections": pairs * 2,
        "window": if args.rate.is_some() { None } else { Some(args.window) },
        "rate": args.rate,
        "sent": s.sent,
        "acked": s.acked,
        "received": received,
        "lost": s.acked.saturating_sub(received),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "errors": s.errors,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "msgs_per_s": (received as f64 / elapsed).round(),
        "server_cpu_us_per_msg": cpu_per_msg.map(|v| (v * 10.0).round() / 10.0),
        "postgres_nats_cpu_us_per_msg": services_per_msg.map(|v| (v * 10.0).round() / 10.0),
        "latency_us": {
            "p50": latency.value_at_quantile(0.50),
            "p99": latency.value_at_quantile(0.99),
            "p999": latency.value_at_quantile(0.999),
            "max": latency.max(),
        },
    });
    println!("{line}");
    Ok(())
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    body: Option<Body>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    t: u64,
}

async fn send(
    ws: Ws,
    gate: Arc<Barrier>,
    idx: usize,
    conv: i64,
    n: u64,
    window: usize,
    interval: Option<Duration>,
) -> SenderStats {
    let (mut sink, mut stream) = ws.split();
    let mut stats = SenderStats::default();
    // Time-ordered ids (UUID v7), as the SDK makes them.
    let frame = |_k: u64| {
        let body = format!(r#"{{"text":"bench message","t":{}}}"#, now_micros());
        let id = uuid::Uuid::now_v7();
        Message::text(format!(
            r#"{{"type":"send","client_msg_id":"{id}","conversation_id":{conv},"kind":"text","body":{body}}}"#
        ))
    };
    gate.wait().await;
    let mut in_flight = 0usize;
    // Fixed-rate senders start spread over one interval, so the total load
    // is smooth instead of every sender firing at the same instant.
    let pairs_total = PAIRS.load(std::sync::atomic::Ordering::Relaxed).max(1);
    let mut ticker = interval.map(|d| {
        let offset = d.mul_f64(idx as f64 / pairs_total as f64);
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline);
    loop {
        if ticker.is_none() {
            let mut fed = false;
            while in_flight < window && stats.sent < n {
                if sink.feed(frame(stats.sent)).await.is_err() {
                    return stats;
                }
                stats.sent += 1;
                in_flight += 1;
                fed = true;
            }
            if fed && sink.flush().await.is_err() {
                return stats;
            }
        }
        if stats.sent >= n && stats.acked + stats.errors >= stats.sent {
            break;
        }
        tokio::select! {
            _ = &mut deadline => break,
            _ = async { ticker.as_mut().expect("ticker").tick().await }, if ticker.is_some() && stats.sent < n => {
                if sink.send(frame(stats.sent)).await.is_err() {
                    return stats;
                }
                stats.sent += 1;
            }
            msg = stream.next() => {
                let Some(Ok(Message::Text(text))) = msg else {
                    if matches!(msg, Some(Ok(_))) { continue; }
                    break;
                };
                match serde_json::from_str::<Incoming>(text.as_str()).map(|f| f.kind) {
                    Ok(k) if k == "ack" => { stats.acked += 1; in_flight = in_flight.saturating_sub(1); }
                    Ok(k) if k == "error" => { stats.errors += 1; in_flight = in_flight.saturating_sub(1); }
                    _ => {}
                }
            }
        }
    }
    let _ = sink.close().await;
    stats
}

async fn receive(
    ws: Ws,
    gate: Arc<Barrier>,
    expect: u64,
    drain: Duration,
) -> (ReceiverStats, Instant) {
    let (_sink, mut stream) = ws.split();
    let mut stats = ReceiverStats {
        received: 0,
        duplicates: 0,
        out_of_order: 0,
        latency: Histogram::new(3).unwrap_or_else(|_| Histogram::new(2).expect("histogram")),
    };
    let mut last_seq = 0i64;
    let mut last = Instant::now();
    gate.wait().await;
    while stats.received < expect {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(drain, stream.next()).await else {
            break;
        };
        let Message::Text(text) = msg else { continue };
        let Ok(f) = serde_json::from_str::<Incoming>(text.as_str()) else {
            continue;
        };
        if f.kind != "message" {
            continue;
        }
        if f.seq <= last_seq {
            stats.duplicates += 1;
            continue;
        }
        if f.seq != last_seq + 1 {
            stats.out_of_order += 1;
        }
        last_seq = f.seq;
        stats.received += 1;
        last = Instant::now();
        if let Some(b) = f.body {
            let _ = stats.latency.record(now_micros().saturating_sub(b.t));
        }
    }
    (stats, last)
}
