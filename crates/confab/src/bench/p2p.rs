//! `confab bench p2p`: two peers in this process on 127.0.0.1 (TCP, Noise,
//! Yamux; mDNS off), one sending N texts to the other as fast as its outbox
//! goes; an envelope counts when the receiver acked it (after its SQLite
//! commit). `--relay` puts an in-process relay between them and gives each
//! only the other's circuit address. Prints one JSON line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use confab_p2p::node::{Event, Node, NodeConfig};
use confab_p2p::store::Contact;

/// Options of `confab bench p2p`.
#[derive(Debug, Args)]
pub struct P2pArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Through an in-process relay instead of a direct connection.
    #[arg(long)]
    relay: bool,
}

async fn node(dir: &std::path::Path, name: &str, relay: Option<String>) -> anyhow::Result<Node> {
    let mut config = NodeConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.mdns = false;
    config.name = Some(name.into());
    config.relay = relay.map(|r| r.parse()).transpose()?;
    Ok(Node::start(config).await?)
}

/// Runs the benchmark.
pub async fn run(args: P2pArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = if args.relay {
        let config = confab_p2p::relay::RelayConfig::new(
            tmp.path().join("relay"),
            vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        );
        let info = confab_p2p::relay::start(config, shutdown.clone().cancelled_owned()).await?;
        Some(info.addrs.first().context("relay address")?.to_string())
    } else {
        None
    };
    let a = node(&tmp.path().join("a"), "a", relay.clone()).await?;
    let b = node(&tmp.path().join("b"), "b", relay.clone()).await?;
    let wait = Duration::from_secs(30);
    let contact = |n: &Node, name: &str, addrs: Vec<String>| Contact {
        peer_id: n.peer_id().to_base58(),
        name: name.into(),
        addrs,
        relay: relay.clone(),
    };
    let direct = |addrs: Vec<confab_p2p::Multiaddr>| -> Vec<String> {
        if args.relay {
            Vec::new()
        } else {
            addrs.iter().map(|a| a.to_string()).collect()
        }
    };
    let b_addrs = direct(b.listening(wait).await?);
    let a_addrs = direct(a.listening(wait).await?);
    if args.relay {
        // Both need their reservations before circuits to them work.
        for n in [&a, &b] {
            let mut ev = n.subscribe();
            if n.status().await?.reservation.is_none() {
                tokio::time::timeout(wait, async {
                    while let Ok(e) = ev.recv().await {
                        if matches!(e, Event::Reservation { .. }) {
                            break;
                        }
                    }
                })
                .await
                .context("no relay reservation")?;
            }
        }
    }
    a.add_contact(contact(&b, "b", b_addrs)).await?;
    b.add_contact(contact(&a, "a", a_addrs)).await?;
    // Warm up: one message delivered end to end.
    let warm = a.send_text("b", "warm-up").await?;
    let ok = a
        .wait_delivered(
            a.subscribe(),
            &b.peer_id().to_base58(),
            &warm.client_msg_id,
            wait,
        )
        .await?;
    anyhow::ensure!(ok, "warm-up message not delivered");

    // Acks are collected as they come (the event stream is bounded).
    let mut events = a.subscribe();
    let total = args.messages;
    let collector = tokio::spawn(async move {
        let mut acks: Vec<(String, String, Instant)> = Vec::with_capacity(total);
        while acks.len() < total {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Ok(Event::Delivered {
                    client_msg_id,
                    path,
                    ..
                })) => acks.push((client_msg_id, path, Instant::now())),
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    anyhow::bail!("bench fell behind the event stream by {n} events")
                }
                Ok(Err(_)) | Err(_) => {
                    anyhow::bail!("stalled after {} of {total} acks", acks.len())
                }
            }
        }
        Ok(acks)
    });
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(args.messages);
    let start = Instant::now();
    for i in 0..args.messages {
        let t = Instant::now();
        let env = a.send_text("b", &format!("bench {i}")).await?;
        sent_at.insert(env.client_msg_id, t);
    }
    let acks = collector.await??;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut paths: HashMap<String, u64> = HashMap::new();
    for (id, path, at) in acks {
        if let Some(t) = sent_at.get(&id) {
            hist.record(at.duration_since(*t).as_micros() as u64)?;
            *paths.entry(path).or_default() += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "bench": "p2p",
            "relay": args.relay,
            "messages": args.messages,
            "seconds": elapsed.as_secs_f64(),
            "messages_per_s": args.messages as f64 / elapsed.as_secs_f64(),
            "ack_latency_ms": {
                "p50": hist.value_at_quantile(0.5) as f64 / 1000.0,
                "p99": hist.value_at_quantile(0.99) as f64 / 1000.0,
                "max": hist.max() as f64 / 1000.0,
            },
            "paths": paths,
        })
    );
    a.shutdown().await;
    b.shutdown().await;
    shutdown.cancel();
    Ok(())
}
