//! `confab bench fanout`: one sender, one group of N members, every other
//! member listening on its own WebSocket.
//!
//! The sender sends M messages at a fixed interval; each body carries its
//! send time and index, so every receiver measures end-to-end latency and
//! which messages it got. Results: deliveries, loss, repeats, order, the
//! latency spread, and for each message the time until the last member had
//! it. Receivers only read: they send no `delivered` or `read` frames.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use confab_proto::{ClientFrame, ConversationId, MessageKind, Seq, UserId};
use confab_sdk::Client;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::server::{cpu_micros, TargetArgs};
use super::ws::{dial, now_micros, Ws};

/// Accounts registered and logged in at once during setup.
const SETUP_PARALLELISM: usize = 16;
/// WebSockets being opened at once, so the server's accept queue keeps up.
const DIAL_PARALLELISM: usize = 64;
/// How long a new connection may take to say `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Password of every bench account.
const PASSWORD: &str = "bench-password";

/// Flags of `confab bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Group members, the sender included (the server allows 10,000).
    #[arg(long, default_value_t = 2000)]
    members: usize,
    /// Messages the sender sends into the group.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Milliseconds between two sends.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Seconds to wait for acks and stragglers after the last send.
    #[arg(long, default_value_t = 30)]
    drain_s: u64,
}

/// One member's credentials.
struct Account {
    user_id: UserId,
    token: String,
}

/// What the sender saw.
struct SenderReport {
    /// Send time (µs since the epoch) of each message, by index.
    sent_at: Vec<u64>,
    acked: u64,
    errors: u64,
}

/// What one receiver saw.
struct ReceiverReport {
    /// False when the connection could not be opened.
    connected: bool,
    /// Receive time (µs since the epoch) of each message, by index.
    got_at: Vec<Option<u64>>,
    /// Distinct messages of this run received.
    deliveries: u64,
    /// Messages whose seq had already been received.
    duplicates: u64,
    /// Messages with a seq below one already received.
    out_of_order: u64,
    /// End-to-end latency of each delivery, in µs.
    latencies: Vec<u64>,
    /// How the connection ended, when it ended before the receiver was done.
    ended: Option<String>,
}

impl ReceiverReport {
    fn new(messages: usize) -> ReceiverReport {
        ReceiverReport {
            connected: false,
            got_at: vec![None; messages],
            deliveries: 0,
            duplicates: 0,
            out_of_order: 0,
            latencies: Vec::with_capacity(messages),
            ended: None,
        }
    }
}

/// The fields of a server frame the receivers look at.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    conversation_id: ConversationId,
    #[serde(default)]
    seq: Seq,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// The bench's message body: send time and index.
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    t: u64,
    #[serde(default)]
    i: Option<usize>,
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    if args.members < 2 {
        bail!("--members must be at least 2 (a sender and a receiver)");
    }
    if args.messages == 0 {
        bail!("--messages must be at least 1");
    }
    let setup_started = Instant::now();
    let target = args.target.start().await?;
    let base = target.base_url.clone();
    eprintln!("registering {} accounts against {base}", args.members);

    let phase = Instant::now();
    let (sender_client, accounts) = setup_accounts(&base, args.members)
        .await
        .context("account setup")?;
    let accounts_s = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    let member_ids: Vec<UserId> = accounts[1..].iter().map(|a| a.user_id).collect();
    let group = sender_client
        .create_group("fanout bench", &member_ids)
        .await
        .with_context(|| format!("creating a group of {} members", args.members))?;
    // Only the id is used: the member list in the answer may be truncated.
    let conv = group.id;
    let group_s = phase.elapsed().as_secs_f64();
    eprintln!(
        "{} accounts in {accounts_s:.1} s, group {conv} in {group_s:.1} s; opening connections",
        args.members
    );

    // Receivers start reading as soon as they are open (which also answers
    // the server's pings while the rest are still dialing).
    let phase = Instant::now();
    let stop = CancellationToken::new();
    let dial_limit = Arc::new(Semaphore::new(DIAL_PARALLELISM));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut receivers = JoinSet::new();
    for account in &accounts[1..] {
        let (base, token) = (base.clone(), account.token.clone());
        let (limit, opened, stop) = (dial_limit.clone(), opened_tx.clone(), stop.clone());
        let messages = args.messages;
        receivers.spawn(async move {
            let mut report = ReceiverReport::new(messages);
            let ws = {
                let _permit = limit.acquire().await;
                open(&base, &token).await
            };
            match ws {
                Ok(ws) => {
                    report.connected = true;
                    let _ = opened.send(Ok(()));
                    drop(opened);
                    receive(ws, conv, &mut report, &stop).await;
                }
                Err(e) => {
                    let _ = opened.send(Err(format!("{e:#}")));
                }
            }
            report
        });
    }
    drop(opened_tx);
    let (mut connected, mut dial_failures) = (0usize, 0usize);
    while let Some(result) = opened_rx.recv().await {
        match result {
            Ok(()) => connected += 1,
            Err(e) => {
                dial_failures += 1;
                if dial_failures <= 3 {
                    eprintln!("a receiver could not connect: {e}");
                }
            }
        }
    }
    let sender_ws = open(&base, &accounts[0].token)
        .await
        .context("opening the sender's connection")?;
    let connect_s = phase.elapsed().as_secs_f64();
    let setup_s = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "{connected} receivers connected ({dial_failures} failed) in {connect_s:.1} s; sending {} messages",
        args.messages
    );

    let cpu_before = target.pid.and_then(cpu_micros);
    let own_cpu_before = cpu_micros(std::process::id());
    let sender = send(
        sender_ws,
        conv,
        args.messages,
        Duration::from_millis(args.interval_ms),
        Duration::from_secs(args.drain_s),
    )
    .await;

    // Collect the receivers; whoever is still waiting `drain_s` after the
    // last send is stopped.
    let messages = args.messages;
    let drain = tokio::time::sleep(Duration::from_secs(args.drain_s));
    tokio::pin!(drain);
    let mut latency = Histogram::<u64>::new(3).context("latency histogram")?;
    let mut last_got_at = vec![0u64; messages];
    let mut got_count = vec![0usize; messages];
    let mut last_delivery = 0u64;
    let (mut deliveries, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64);
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let joined = tokio::select! {
            joined = receivers.join_next() => joined,
            () = &mut drain, if !stop.is_cancelled() => {
                stop.cancel();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let report = joined.context("receiver task failed")?;
        if !report.connected {
            continue;
        }
        deliveries += report.deliveries;
        duplicates += report.duplicates;
        out_of_order += report.out_of_order;
        for v in report.latencies {
            latency.record(v).context("recording latency")?;
        }
        for (k, at) in report.got_at.iter().enumerate() {
            if let Some(at) = *at {
                last_got_at[k] = last_got_at[k].max(at);
                got_count[k] += 1;
                last_delivery = last_delivery.max(at);
            }
        }
        if let Some(why) = report.ended {
            *ended.entry(why).or_default() += 1;
        }
    }
    let cpu_after = target.pid.and_then(cpu_micros);
    let own_cpu_after = cpu_micros(std::process::id());
    let receivers_total = args.members - 1;

    let expected = (receivers_total * messages) as u64;
    let first_send = sender.sent_at.iter().copied().filter(|&t| t > 0).min();
    let delivery_span_s = first_send
        .map(|f| last_delivery.saturating_sub(f) as f64 / 1e6)
        .filter(|&s| s > 0.0);
    let mut all_delivered_ms: Vec<f64> = (0..messages)
        .filter(|&k| got_count[k] == receivers_total && sender.sent_at[k] > 0)
        .map(|k| last_got_at[k].saturating_sub(sender.sent_at[k]) as f64 / 1e3)
        .collect();
    all_delivered_ms.sort_by(f64::total_cmp);
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let line = json!({
        "bench": "fanout",
        "members": args.members,
        "messages": messages,
        "interval_ms": args.interval_ms,
        "receivers_connected": connected,
        "sent": sender.sent_at.iter().filter(|&&t| t > 0).count(),
        "acked": sender.acked,
        "send_errors": sender.errors,
        "expected_deliveries": expected,
        "deliveries": deliveries,
        "missing": expected.saturating_sub(deliveries),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "receivers_ended_early": ended,
        "deliveries_per_s": delivery_span_s.map(|s| (deliveries as f64 / s).round()),
        "latency_us": {
            "p50": latency.value_at_quantile(0.50),
            "p90": latency.value_at_quantile(0.90),
            "p99": latency.value_at_quantile(0.99),
            "max": latency.max(),
        },
        "messages_all_delivered": all_delivered_ms.len(),
        "per_message_all_delivered_ms_p50": median(&all_delivered_ms).map(round1),
        "per_message_all_delivered_ms_max": all_delivered_ms.last().copied().map(round1),
        "server_cpu_ms": match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) / 1000),
            _ => None,
        },
        // The bench shares the machine with the server: its own CPU time
        // over the same phase shows how much it competed.
        "bench_cpu_ms": match (own_cpu_before, own_cpu_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) / 1000),
            _ => None,
        },
        "setup_s": round1(setup_s),
        "setup_phases_s": {
            "accounts": round1(accounts_s),
            "group": round1(group_s),
            "connections": round1(connect_s),
        },
    });
    println!("{line}");
    Ok(())
}

/// Registers and logs in `n` accounts, `SETUP_PARALLELISM` at a time.
/// Returns account 0's client (the sender's, still logged in) and every
/// account's id and access token, in order.
async fn setup_accounts(base: &str, n: usize) -> anyhow::Result<(Client, Vec<Account>)> {
    let run = now_micros() % 1_000_000_000;
    let name = move |i: usize| format!("fo{run}u{i}");
    let sender = Client::new(base);
    sender
        .register(&name(0), PASSWORD, None)
        .await
        .context("registering the sender")?;
    let session = sender
        .login(&name(0), PASSWORD, Some("bench"))
        .await
        .context("logging the sender in")?;
    let first = Account {
        user_id: session.user.id,
        token: session.access_token,
    };

    // A few workers, each with one HTTP client, take the next index until
    // none are left; only the tokens are kept, so no connections linger.
    let next = Arc::new(AtomicUsize::new(1));
    let mut workers = JoinSet::new();
    for _ in 0..SETUP_PARALLELISM.min(n - 1) {
        let (next, base, name) = (next.clone(), base.to_owned(), name);
        workers.spawn(async move {
            let client = Client::new(&base);
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let user = name(i);
                client
                    .register(&user, PASSWORD, None)
                    .await
                    .with_context(|| format!("registering {user}"))?;
                let s = client
                    .login(&user, PASSWORD, Some("bench"))
                    .await
                    .with_context(|| format!("logging {user} in"))?;
                done.push((
                    i,
                    Account {
                        user_id: s.user.id,
                        token: s.access_token,
                    },
                ));
            }
            anyhow::Ok(done)
        });
    }
    let mut slots: Vec<Option<Account>> = (0..n).map(|_| None).collect();
    slots[0] = Some(first);
    while let Some(joined) = workers.join_next().await {
        for (i, account) in joined.context("setup task failed")?? {
            slots[i] = Some(account);
        }
    }
    let accounts = slots
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("an account was not set up")?;
    Ok((sender, accounts))
}

/// Opens a connection and waits for the server's `hello`.
async fn open(base: &str, token: &str) -> anyhow::Result<Ws> {
    let mut ws = dial(base, token).await.context("dialing")?;
    let hello = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Incoming<'_> =
                        serde_json::from_str(text.as_str()).context("undecodable first frame")?;
                    if frame.kind == "hello" {
                        return anyhow::Ok(());
                    }
                    bail!("first frame was {:?}, not hello", frame.kind);
                }
                Some(Ok(Message::Close(frame))) => bail!("closed: {}", describe_close(frame)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading hello"),
                None => bail!("closed before hello"),
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, hello)
        .await
        .context("no hello in time")??;
    Ok(ws)
}

/// Sends `n` messages into `conv`, one every `interval`, and waits for the
/// acks (at most `drain` after the last send).
async fn send(
    ws: Ws,
    conv: ConversationId,
    n: usize,
    interval: Duration,
    drain: Duration,
) -> SenderReport {
    let (mut sink, mut stream) = ws.split();
    let mut report = SenderReport {
        sent_at: vec![0; n],
        acked: 0,
        errors: 0,
    };
    let mut sent = 0usize;
    // A zero period would make `interval` panic; 1 ms is as good as "no pause".
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pushed forward to `drain` after the last send.
    let deadline =
        tokio::time::sleep(interval.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)) + drain);
    tokio::pin!(deadline);
    while report.acked + report.errors < n as u64 {
        tokio::select! {
            () = &mut deadline => {
                eprintln!("sender: gave up waiting for {} acks", n as u64 - report.acked - report.errors);
                break;
            }
            _ = ticker.tick(), if sent < n => {
                let t = now_micros();
                let frame = ClientFrame::Send {
                    client_msg_id: uuid::Uuid::now_v7().to_string(),
                    conversation_id: conv,
                    kind: MessageKind::Text,
                    body: json!({ "text": format!("fanout {sent}"), "t": t, "i": sent }),
                };
                let text = match serde_json::to_string(&frame) {
                    Ok(text) => text,
                    Err(e) => {
                        eprintln!("sender: could not encode a send: {e}");
                        break;
                    }
                };
                if let Err(e) = sink.send(Message::text(text)).await {
                    eprintln!("sender: connection failed: {e}");
                    break;
                }
                report.sent_at[sent] = t;
                sent += 1;
                if sent == n {
                    deadline.as_mut().reset(tokio::time::Instant::now() + drain);
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text.as_str()) else {
                        continue;
                    };
                    match frame.kind.as_ref() {
                        "ack" => report.acked += 1,
                        "error" => {
                            report.errors += 1;
                            if report.errors <= 3 {
                                eprintln!("sender: error frame: {}", frame.message.unwrap_or_default());
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    eprintln!("sender: closed by the server: {}", describe_close(frame));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    eprintln!("sender: connection failed: {e}");
                    break;
                }
                None => {
                    eprintln!("sender: connection closed");
                    break;
                }
            },
        }
    }
    let _ = sink.close().await;
    report
}

/// Reads `ws` until all `report.got_at.len()` messages of `conv` arrived,
/// the connection ends, or `stop` fires. Sends nothing.
async fn receive(
    mut ws: Ws,
    conv: ConversationId,
    report: &mut ReceiverReport,
    stop: &CancellationToken,
) {
    let want = report.got_at.len() as u64;
    let mut seen: HashSet<Seq> = HashSet::with_capacity(report.got_at.len());
    let mut max_seq: Seq = 0;
    while report.deliveries < want {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                report.ended = Some(describe_close(frame));
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                report.ended = Some(format!("error: {e}"));
                return;
            }
            None => {
                report.ended = Some("closed without a close frame".to_owned());
                return;
            }
        };
        let now = now_micros();
        let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text.as_str()) else {
            continue;
        };
        if frame.kind != "message" || frame.conversation_id != conv {
            continue;
        }
        let Some(Body { t, i: Some(k) }) = frame.body else {
            continue;
        };
        if k >= report.got_at.len() {
            continue;
        }
        if !seen.insert(frame.seq) {
            report.duplicates += 1;
            continue;
        }
        if frame.seq < max_seq {
            report.out_of_order += 1;
        }
        max_seq = max_seq.max(frame.seq);
        report.deliveries += 1;
        report.got_at[k] = Some(now);
        report.latencies.push(now.saturating_sub(t));
    }
}

/// A close frame as text, e.g. `1008 too slow to read; reconnect and sync`.
fn describe_close(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason),
        None => "close without a code".to_owned(),
    }
}

/// The median of sorted values.
fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}
