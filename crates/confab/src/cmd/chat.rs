//! `confab send`, `history`, `listen`.

use std::collections::HashMap;

use anyhow::{bail, Context as _};
use clap::Args;
use confab_sdk::{Client, ConnectOptions, Event, HistoryQuery, MessageKind, MessageRecord, UserId};
use serde_json::json;

use super::ClientArgs;

/// `confab send USER TEXT`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Recipient's username.
    user: String,
    /// Message text.
    text: String,
    /// Use the end-to-end encrypted direct conversation (made if missing).
    #[arg(long)]
    encrypted: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `confab history USER`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The other user's username.
    user: String,
    /// How many messages (newest).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only messages before this seq.
    #[arg(long)]
    before: Option<i64>,
    /// The end-to-end encrypted direct conversation, decrypted.
    #[arg(long)]
    encrypted: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `confab listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

async fn user_id(client: &Client, username: &str) -> anyhow::Result<UserId> {
    let found = client.search_users(username).await?;
    found
        .iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
        .map(|u| u.id)
        .with_context(|| format!("no user named {username:?}"))
}

/// Sends one text message over HTTP (durable when this returns).
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let to = user_id(&client, &args.user).await?;
    if args.encrypted {
        let e2ee = args.client.e2ee().await?;
        let conv = e2ee.create_direct(to).await?;
        let seq = e2ee.send_text(conv.id, &args.text).await?;
        args.client.save_if_changed(e2ee.client())?;
        if args.json {
            println!("{}", json!({"conversation_id": conv.id, "seq": seq}));
        } else {
            println!(
                "sent to {} (encrypted conversation {}, seq {seq})",
                args.user, conv.id
            );
        }
        return Ok(());
    }
    let conv = client.direct_conversation(to).await?;
    let id = confab_sdk::new_client_msg_id();
    let body = json!({ "text": args.text });
    // A transport error leaves it unknown whether the server committed: try
    // again with the same client_msg_id, which cannot duplicate.
    let mut attempt = 0;
    let resp = loop {
        match client
            .send_http(conv.id, &id, MessageKind::Text, body.clone())
            .await
        {
            Ok(r) => break r,
            Err(e) if attempt < 3 && e.code().is_none_or(|c| c.is_retryable()) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    args.client.save_if_changed(&client)?;
    if args.json {
        println!(
            "{}",
            json!({"conversation_id": resp.conversation_id, "seq": resp.seq, "ts": resp.ts, "client_msg_id": resp.client_msg_id})
        );
    } else {
        println!(
            "sent to {} (conversation {}, seq {})",
            args.user, resp.conversation_id, resp.seq
        );
    }
    Ok(())
}

/// Prints a page of history, oldest first.
pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let to = user_id(&client, &args.user).await?;
    if args.encrypted {
        let e2ee = args.client.e2ee().await?;
        let conv = e2ee.create_direct(to).await?;
        for m in e2ee.history(conv.id).await? {
            if args.json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                println!("{}", super::e2ee::line(&m));
            }
        }
        args.client.save_if_changed(e2ee.client())?;
        return Ok(());
    }
    let conv = client.direct_conversation(to).await?;
    let query = HistoryQuery {
        before_seq: args.before,
        after_seq: None,
        limit: Some(args.limit),
    };
    let page = client.history(conv.id, query).await?;
    let mut names = Names::default();
    for m in &page.messages {
        if args.json {
            println!("{}", serde_json::to_string(m)?);
        } else {
            println!("{}", names.line(&client, m).await);
        }
    }
    if page.has_more && !args.json {
        let first = page.messages.first().map_or(0, |m| m.seq);
        eprintln!("(older messages: --before {first})");
    }
    args.client.save_if_changed(&client)?;
    Ok(())
}

/// Prints live events until Ctrl-C.
pub async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let mut conn = client.connect(ConnectOptions::default())?;
    let mut names = Names::default();
    loop {
        let event = tokio::select! {
            e = conn.next_event() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else {
            bail!("connection ended")
        };
        let line = if args.json {
            event_json(&event).to_string()
        } else {
            names.event_line(&client, &event).await
        };
        println!("{line}");
    }
    conn.close().await;
    args.client.save_if_changed(&client)?;
    Ok(())
}

/// Caches user id → username for printing.
#[derive(Default)]
struct Names(HashMap<UserId, String>);

impl Names {
    async fn name(&mut self, client: &Client, id: UserId) -> String {
        if let Some(n) = self.0.get(&id) {
            return n.clone();
        }
        let name = client
            .user(id)
            .await
            .map(|u| u.username)
            .unwrap_or_else(|_| format!("user{id}"));
        self.0.insert(id, name.clone());
        name
    }

    async fn line(&mut self, client: &Client, m: &MessageRecord) -> String {
        let who = self.name(client, m.sender_id).await;
        let text = match m.body.get("text").and_then(|t| t.as_str()) {
            Some(t) => t.to_owned(),
            None => format!("[{}] {}", m.kind.as_str(), m.body),
        };
        format!("[{} #{}] {}: {}", m.conversation_id, m.seq, who, text)
    }

    async fn event_line(&mut self, client: &Client, e: &Event) -> String {
        match e {
            Event::Message(m) => self.line(client, m).await,
            Event::Receipt {
                conversation_id,
                user_id,
                kind,
                seq,
            } => {
                let who = self.name(client, *user_id).await;
                format!("[{conversation_id}] {who} {kind:?} up to #{seq}").to_lowercase()
            }
            Event::Typing {
                conversation_id,
                user_id,
                state,
            } => {
                let who = self.name(client, *user_id).await;
                format!("[{conversation_id}] {who} typing {state:?}").to_lowercase()
            }
            Event::Connected { user_id, device_id } => {
                format!("connected (user {user_id}, device {device_id})")
            }
            Event::SyncComplete => "up to date".to_owned(),
            Event::Disconnected { reason } => format!("disconnected: {reason}; reconnecting"),
            Event::ServerEvent(event) => {
                let fields = serde_json::to_value(event).unwrap_or_default();
                format!("{} {fields}", event.name())
            }
            Event::Error(e) => format!("error {}: {}", e.code, e.message),
            other => event_json(other).to_string(),
        }
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    match e {
        Event::Message(m) => {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), "message".into());
            }
            v
        }
        Event::Connected { user_id, device_id } => {
            json!({"type": "connected", "user_id": user_id, "device_id": device_id})
        }
        Event::Disconnected { reason } => json!({"type": "disconnected", "reason": reason}),
        Event::SyncComplete => json!({"type": "sync_complete"}),
        Event::Receipt {
            conversation_id,
            user_id,
            kind,
            seq,
        } => {
            json!({"type": "receipt", "conversation_id": conversation_id, "user_id": user_id, "kind": kind, "seq": seq})
        }
        Event::Typing {
            conversation_id,
            user_id,
            state,
        } => {
            json!({"type": "typing", "conversation_id": conversation_id, "user_id": user_id, "state": state})
        }
        Event::Presence {
            user_id,
            status,
            last_seen,
        } => {
            json!({"type": "presence", "user_id": user_id, "status": status, "last_seen": last_seen})
        }
        Event::Call {
            call_id,
            conversation_id,
            from_user_id,
            signal,
            payload,
        } => {
            json!({"type": "call", "call_id": call_id, "conversation_id": conversation_id, "from_user_id": from_user_id, "signal": signal, "payload": payload})
        }
        Event::ServerEvent(event) => {
            let mut v = serde_json::to_value(event).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), "event".into());
            }
            v
        }
        Event::Pong { nonce } => json!({"type": "pong", "nonce": nonce}),
        Event::Error(err) => json!({"type": "error", "code": err.code, "message": err.message}),
    }
}
