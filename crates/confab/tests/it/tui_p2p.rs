//! `confab chat --p2p`: the terminal app's P2P runner (ann, on a
//! `TestBackend` with scripted keys) and a plain peer (bob, a
//! `confab_p2p::Node`), both on 127.0.0.1 with real sockets: contacts made
//! from links (ann's through `confab p2p add`, which the running app
//! answers on its control socket), messages both ways (Chinese included,
//! wrapped like in server mode), typing, and the delivered and read ticks.

use std::path::Path;
use std::time::Duration;

use confab::tui::{App, P2pRunError, P2pRunner, RunnerOptions};
use confab_p2p::link::ContactLink;
use confab_p2p::node::{Event, Node, NodeConfig};
use confab_p2p::store::{Contact, Receipt};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use tokio::sync::{broadcast, mpsc};

use crate::p2p::support::cli;

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &Path, name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some(name.into());
    config
}

/// The buffer as one string per row (wide-character padding cells skipped).
fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let mut row = String::new();
            let mut x = 0;
            while x < area.width {
                let cell = &buffer[(area.x + x, area.y + y)];
                row.push_str(cell.symbol());
                let width = unicode_width::UnicodeWidthStr::width(cell.symbol()).max(1);
                x += u16::try_from(width).expect("width");
            }
            row.trim_end().to_owned()
        })
        .collect()
}

/// The inside of the conversation pane at 80 columns (a row of wide
/// characters has fewer chars than columns: up to the border).
fn right(screen: &[String]) -> Vec<String> {
    screen
        .iter()
        .map(|l| {
            let cut: String = l.chars().skip(21).collect();
            cut.trim_end().trim_end_matches('│').trim_end().to_owned()
        })
        .collect()
}

fn contains(screen: &[String], text: &str) -> bool {
    screen.iter().any(|l| l.contains(text))
}

struct Ui {
    runner: P2pRunner<TestBackend>,
    keys: mpsc::Sender<TermEvent>,
}

impl Ui {
    async fn start(config: NodeConfig) -> Result<Ui, P2pRunError> {
        let (keys, rx) = mpsc::channel(1024);
        let options = RunnerOptions {
            tick: Duration::from_millis(50),
            ..RunnerOptions::default()
        };
        let runner = P2pRunner::new(config, TestBackend::new(80, 24), rx, options).await?;
        Ok(Ui { runner, keys })
    }

    fn app(&self) -> &App {
        self.runner.app()
    }

    fn screen(&self) -> Vec<String> {
        lines(self.runner.terminal().backend().buffer())
    }

    /// Steps the runner until `done` holds (checked after every step).
    async fn wait(&mut self, what: &str, done: impl Fn(&App, &[String]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if done(self.app(), &self.screen()) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.runner.step()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => panic!("the app quit while waiting for {what}"),
                Ok(Err(e)) => panic!("runner failed while waiting for {what}: {e}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; notice {:?}; screen:\n{}",
                    self.app().notice(),
                    self.screen().join("\n")
                ),
            }
        }
    }

    async fn wait_text(&mut self, text: &str) {
        self.wait(text, |_, screen| contains(screen, text)).await;
    }

    /// Types a line and Enter, and steps until every key was handled.
    async fn type_line(&mut self, line: &str) {
        for c in line.chars().map(KeyCode::Char).chain([KeyCode::Enter]) {
            let key = KeyEvent::new(c, KeyModifiers::NONE);
            self.keys.send(TermEvent::Key(key)).await.expect("key");
        }
        while self.keys.capacity() < self.keys.max_capacity() {
            self.runner.step().await.expect("step");
        }
    }
}

/// Waits for the first node event `pick` accepts, and returns what it made of it.
async fn next<T>(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("bob stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bob never saw {what}"))
}

async fn link_of(node: &Node, name: &str) -> String {
    ContactLink {
        peer: node.peer_id(),
        name: name.into(),
        addrs: node.listening(WAIT).await.expect("listening"),
        relay: None,
    }
    .to_link()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_chat_sends_receives_typing_and_ticks() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let bob = Node::start(config(db.path(), "bob")).await.expect("bob");
    let mut bob_events = bob.subscribe();
    let mut ui = Ui::start(config(da.path(), "ann"))
        .await
        .expect("ann's app");

    // One peer per data dir: a second app on ann's is refused, in this
    // process and as `confab chat --p2p` (before it takes the terminal).
    match Ui::start(config(da.path(), "ann")).await {
        Err(P2pRunError::AlreadyRunning(dir)) => assert_eq!(dir, da.path()),
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a second app started on the same data dir"),
    }
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["chat", "--p2p", "--no-mdns", "--data-dir"])
        .arg(da.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("a second `confab chat --p2p` ends")
        .expect("run confab");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && said.contains("is running on"),
        "{said}"
    );

    // Links both ways: ann's through the CLI, which hands it to the app.
    let ann_node = ui.runner.node().clone();
    let bob_link = link_of(&bob, "bob").await;
    let dir = da.path().to_owned();
    tokio::task::spawn_blocking(move || cli(&["add", &bob_link], &dir))
        .await
        .expect("confab p2p add");
    bob.add_contact(Contact {
        peer_id: ann_node.peer_id().to_base58(),
        name: "ann".into(),
        addrs: ann_node
            .listening(WAIT)
            .await
            .expect("ann listens")
            .iter()
            .map(|a| a.to_string())
            .collect(),
        relay: None,
    })
    .await
    .expect("bob adds ann");
    let conv = confab_p2p::direct_conversation_id(
        &ann_node.peer_id().to_base58(),
        &bob.peer_id().to_base58(),
    );

    // ann opens the chat by the contact's name and writes; bob gets it,
    // and ann's line goes from sent to delivered.
    ui.type_line("/dm bob").await;
    ui.wait("the chat with bob", |app, _| {
        app.selected().is_some_and(|c| app.title(c) == "bob")
    })
    .await;
    ui.type_line("hello bob").await;
    let hello_id = next(&mut bob_events, "ann's text", |e| match e {
        Event::Message { message } if message.body.contains("hello bob") => {
            Some(message.client_msg_id.clone())
        }
        _ => None,
    })
    .await;
    ui.wait("the delivered tick", |_, s| {
        right(s)
            .iter()
            .any(|l| l.contains("You: hello bob") && l.ends_with("✓✓"))
    })
    .await;

    // bob types, then replies in Chinese, long enough to wrap.
    bob.typing(&conv).await.expect("typing");
    ui.wait_text("bob is typing…").await;
    let short = "我们明天下午开会";
    bob.send_text("ann", short).await.expect("reply");
    ui.wait_text(&format!("bob: {short}")).await;
    ui.wait("typing line cleared", |_, s| !contains(s, "is typing"))
        .await;
    let long = format!("{short}，{short}，地点在三楼会议室，请准时参加。{short}");
    bob.send_text("ann", &long).await.expect("long reply");
    ui.wait("the long reply, wrapped", |_, s| {
        let pane = right(s);
        let joined: String = pane.concat().chars().filter(|c| *c != ' ').collect();
        joined.contains(&long) && !pane.iter().any(|l| l.contains(&long))
    })
    .await;

    // The open chat marks bob's messages read: bob gets ann's receipt.
    next(&mut bob_events, "ann's read receipt", |e| match e {
        Event::Message { message } if message.kind == "receipt" => {
            let r: Receipt = serde_json::from_str(&message.body).ok()?;
            (r.state == "read").then_some(())
        }
        _ => None,
    })
    .await;

    // bob reads: ann's message gets the read tick.
    let receipt = bob.mark_read(&conv).await.expect("read").expect("unread");
    assert!(receipt.body.contains(&hello_id), "{}", receipt.body);
    ui.wait("the read tick", |_, s| {
        right(s)
            .iter()
            .any(|l| l.contains("You: hello bob") && l.ends_with("✓✓ read"))
    })
    .await;
    assert_eq!(ui.app().bells(), 0, "no bell for the open conversation");

    // Another program sends through the app's control socket: the app
    // shows it at once, as if typed there.
    let dir = da.path().to_owned();
    tokio::task::spawn_blocking(move || {
        cli(&["send", "bob", "from the CLI 命令行", "--wait", "0"], &dir)
    })
    .await
    .expect("confab p2p send");
    // (Checked in the app's state: the test backend's screen can keep
    // stale halves of wide characters from earlier frames in a row.)
    ui.wait("the CLI's text in the open chat", |app, _| {
        app.selected().is_some_and(|c| {
            c.messages
                .values()
                .any(|m| m.sender_id == app.me().id && m.body["text"] == "from the CLI 命令行")
        })
    })
    .await;
    next(&mut bob_events, "the CLI's text", |e| match e {
        Event::Message { message } if message.body.contains("from the CLI") => Some(()),
        _ => None,
    })
    .await;
    bob.shutdown().await;
}

/// ann's app and bob's node, contacts of each other (straight from their
/// addresses; the first test makes them from links); ann calls bob
/// `bob_name`.
async fn linked(da: &Path, db: &Path, bob_name: &str) -> (Ui, Node) {
    let bob = Node::start(config(db, "bob")).await.expect("bob");
    let ui = Ui::start(config(da, "ann")).await.expect("ann's app");
    for (from, to, name) in [
        (ui.runner.node(), &bob, bob_name),
        (&bob, ui.runner.node(), "ann"),
    ] {
        let addrs = to.listening(WAIT).await.expect("listening");
        from.add_contact(Contact {
            peer_id: to.peer_id().to_base58(),
            name: name.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            relay: None,
        })
        .await
        .expect("add contact");
    }
    (ui, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_chat_offers_files_and_runs_groups() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // ann calls bob 小明: names in Chinese work like any other.
    let (mut ui, bob) = linked(da.path(), db.path(), "小明").await;
    let mut bob_events = bob.subscribe();

    // A file in the direct chat: offered, shown, pulled by bob intact.
    // 600 KB: three chunks, so both sides see the progress.
    let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let file = da.path().join("report.bin");
    std::fs::write(&file, &bytes).expect("write file");
    ui.type_line("/dm 小明").await;
    ui.wait("the chat with bob", |app, _| {
        app.selected().is_some_and(|c| app.title(c) == "小明")
    })
    .await;
    ui.type_line(&format!("/file {}", file.display())).await;
    ui.wait("the file line", |app, s| {
        app.uploads().is_empty() && contains(s, "You: [file report.bin 600.0 KB]")
    })
    .await;
    let part = next(&mut bob_events, "bob's download progress", |e| match e {
        Event::FileProgress {
            direction, bytes, ..
        } if direction == "in" => Some(*bytes),
        _ => None,
    })
    .await;
    assert!(part > 0 && part < 600_000, "{part}");
    let got = next(&mut bob_events, "the file", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(std::fs::read(got).expect("bob's copy"), bytes);
    // ann's app followed bob fetching it.
    ui.wait_text("小明 is fetching your file: 100% (600.0 KB of 600.0 KB)")
        .await;

    // A group made from the input line; messages both ways.
    ui.type_line("/group 周会 小明").await;
    ui.wait("the new group", |app, s| {
        app.selected().is_some_and(|c| app.title(c) == "周会")
            && contains(s, "ann created the group 周会")
    })
    .await;
    let group = next(&mut bob_events, "the group", |e| match e {
        Event::Message { message } if message.kind == "group_create" => {
            Some(message.conversation_id.clone())
        }
        _ => None,
    })
    .await;
    ui.type_line("各位好").await;
    next(&mut bob_events, "ann's group message", |e| match e {
        Event::Message { message }
            if message.conversation_id == group && message.body.contains("各位好") =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    bob.send_to_conversation(&group, "text", r#"{"text":"收到"}"#.into())
        .await
        .expect("bob writes in the group");
    ui.wait_text("小明: 收到").await;

    // A file in the group: bob pulls it like the direct one.
    let notes = da.path().join("纪要.txt");
    std::fs::write(&notes, "会议纪要：分布式系统".repeat(100)).expect("write notes");
    ui.type_line(&format!("/file {}", notes.display())).await;
    ui.wait("the group file line", |app, s| {
        app.uploads().is_empty() && contains(s, "You: [file 纪要.txt")
    })
    .await;
    let got = next(&mut bob_events, "the group file", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        std::fs::read(got).expect("bob's copy"),
        std::fs::read(&notes).expect("notes")
    );

    // What P2P groups cannot do is said, not tried.
    ui.type_line("/leave").await;
    ui.wait_text("P2P groups have no leaving").await;
    ui.type_line("/friend carl").await;
    ui.wait_text("no friend requests in P2P mode").await;

    // The admin removes bob: the notice line, and bob hears of it.
    ui.type_line("/kick 小明").await;
    ui.wait_text("ann removed 小明").await;
    next(&mut bob_events, "the removal", |e| match e {
        Event::Message { message }
            if message.conversation_id == group && message.kind == "group_change" =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    bob.shutdown().await;
}

/// Waits until `node` has a connection to `peer`.
async fn connected(node: &Node, peer: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = node.status().await.expect("status");
        if status
            .contacts
            .iter()
            .any(|c| c.peer_id == peer && c.path != "offline")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never connected to {peer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` has no connection to `peer`.
async fn offline(node: &Node, peer: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = node.status().await.expect("status");
        if status
            .contacts
            .iter()
            .any(|c| c.peer_id == peer && c.path == "offline")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected to {peer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A text message of `sender` in the app's open chat, by its text.
fn shown_text(app: &App, sender: confab_sdk::UserId, text: &str) -> bool {
    app.selected().is_some_and(|c| {
        c.messages.values().any(|m| {
            m.sender_id == sender
                && m.kind == confab_sdk::MessageKind::Text
                && m.body["text"] == text
        })
    })
}

/// The envelopes a node stored in a conversation, as raw text.
async fn stored(node: &Node, conv: &str) -> Vec<confab_p2p::store::StoredMessage> {
    let conv = conv.to_owned();
    node.store()
        .call(move |s| s.history(&conv))
        .await
        .expect("history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_chat_runs_end_to_end_encrypted_chats() {
    let (da, db, dc) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (mut ui, bob) = linked(da.path(), db.path(), "bob").await;
    let mut bob_events = bob.subscribe();
    let ann = ui.runner.node().peer_id().to_base58();
    let me = ui.app().me().id;

    // carl, a contact of ann's (and ann of his), is not online: no keys,
    // a clear notice (at once), and no conversation.
    let carl = Node::start(config(dc.path(), "carl")).await.expect("carl");
    let carl_id = carl.peer_id().to_base58();
    for (from, to, name) in [
        (ui.runner.node(), &carl, "carl"),
        (&carl, ui.runner.node(), "ann"),
    ] {
        let addrs = to.listening(WAIT).await.expect("listening");
        from.add_contact(Contact {
            peer_id: to.peer_id().to_base58(),
            name: name.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            relay: None,
        })
        .await
        .expect("add contact");
    }
    carl.shutdown().await;
    drop(carl);
    offline(ui.runner.node(), &carl_id).await;
    ui.type_line("/dm carl -e").await;
    ui.wait("the notice about carl's keys", |app, _| {
        app.notice()
            .is_some_and(|n| n.contains("waiting for keys: carl must be online"))
    })
    .await;
    assert!(
        !ui.app().chats().iter().any(|c| c.conv.encrypted),
        "no encrypted chat without keys"
    );

    // ann opens the encrypted chat with bob: locked, and writes in Chinese.
    connected(ui.runner.node(), &bob.peer_id().to_base58()).await;
    ui.type_line("/dm bob -e").await;
    ui.wait("the encrypted chat with bob", |app, _| {
        app.selected()
            .is_some_and(|c| c.conv.encrypted && app.title(c) == "🔒 bob")
    })
    .await;
    let conv =
        confab_p2p::store::encrypted_direct_conversation_id(&ann, &bob.peer_id().to_base58());
    let secret = "你好，这是端到端加密的消息";
    ui.type_line(secret).await;
    let got = next(
        &mut bob_events,
        "ann's encrypted text, opened",
        |e| match e {
            Event::Message { message } if message.conversation_id == conv => {
                Some((message.kind.clone(), message.body.clone()))
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(got.0, "text");
    assert!(got.1.contains(secret), "{}", got.1);
    ui.wait("ann's line, sent", |app, _| shown_text(app, me, secret))
        .await;
    // The envelopes on both sides are ciphertext (and a Welcome).
    for node in [ui.runner.node(), &bob] {
        let envelopes = stored(node, &conv).await;
        assert!(envelopes.len() >= 2, "{envelopes:?}");
        for m in &envelopes {
            // (Read receipts stay plain: they carry ids only.)
            assert!(matches!(m.kind.as_str(), "encrypted" | "receipt"), "{m:?}");
            assert!(
                !m.body.contains(secret) && !m.body.contains("端到端"),
                "{m:?}"
            );
        }
    }
    // Delivered tick, as for plain messages.
    ui.wait("the delivered tick", |app, _| {
        app.selected().is_some_and(|c| {
            c.messages.values().any(|m| {
                m.sender_id == me
                    && m.body["text"] == secret
                    && matches!(
                        c.tick(m.seq),
                        confab::tui::Tick::Delivered | confab::tui::Tick::Read
                    )
            })
        })
    })
    .await;

    // bob replies encrypted: ann's app shows it opened, in the locked chat.
    let reply = "收到，我们下午三点见";
    let sent = bob
        .send_encrypted(
            &conv,
            "text",
            serde_json::json!({ "text": reply }).to_string(),
        )
        .await
        .expect("bob replies");
    assert!(!sent.body.contains(reply));
    ui.wait("bob's reply, opened", |app, _| {
        app.selected().is_some_and(|c| c.conv.encrypted)
            && app
                .selected()
                .is_some_and(|c| c.messages.values().any(|m| m.body["text"] == reply))
    })
    .await;
    ui.wait_text("🔒 bob").await;

    // A file goes encrypted: its name inside the MLS message, the bytes
    // pulled by bob from ann; nothing plain in the chat.
    let file = da.path().join("机密.txt");
    std::fs::write(&file, "机密文件的内容").expect("write file");
    ui.type_line(&format!("/file {}", file.display())).await;
    next(
        &mut bob_events,
        "the encrypted file offer, opened",
        |e| match e {
            Event::Message { message }
                if message.conversation_id == conv
                    && message.kind == "file"
                    && message.body.contains("机密.txt") =>
            {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    let got = next(&mut bob_events, "the file's bytes", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&got).expect("read"),
        "机密文件的内容"
    );
    let envelopes = stored(ui.runner.node(), &conv).await;
    assert!(
        envelopes
            .iter()
            .all(|m| matches!(m.kind.as_str(), "encrypted" | "receipt") && !m.body.contains("机密")),
        "nothing plain in the encrypted chat: {envelopes:?}"
    );

    // An encrypted group from the input line; bob reads ann's message.
    ui.type_line("/group 密谈 bob -e").await;
    ui.wait("the encrypted group", |app, _| {
        app.selected()
            .is_some_and(|c| c.conv.encrypted && app.title(c) == "🔒 密谈")
    })
    .await;
    let group = ui
        .app()
        .selected()
        .and_then(|c| ui.runner.p2p_conversation(c.id()))
        .expect("the group's P2P id");
    ui.type_line("组里的第一条").await;
    next(
        &mut bob_events,
        "ann's group message, opened",
        |e| match e {
            Event::Message { message }
                if message.conversation_id == group && message.body.contains("组里的第一条") =>
            {
                Some(())
            }
            _ => None,
        },
    )
    .await;

    // /add and /kick go through the node's group change, each with its
    // MLS commit: carl (online again, and reaching ann) is added and reads
    // what ann writes next.
    let carl = Node::start(config(dc.path(), "carl"))
        .await
        .expect("carl again");
    let mut carl_events = carl.subscribe();
    connected(ui.runner.node(), &carl_id).await;
    ui.type_line("/add carl").await;
    ui.wait_text("ann added carl").await;
    ui.type_line("/kick bob").await;
    ui.wait_text("ann removed bob").await;
    ui.type_line("欢迎卡尔").await;
    next(
        &mut carl_events,
        "ann's message to carl, opened",
        |e| match e {
            Event::Message { message }
                if message.conversation_id == group && message.body.contains("欢迎卡尔") =>
            {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    let envelopes = stored(ui.runner.node(), &group).await;
    let commits = envelopes
        .iter()
        .filter(|m| m.kind == "encrypted" && m.body.contains(r#""mls":"commit""#))
        .count();
    assert_eq!(commits, 2, "one commit per change: {envelopes:?}");
    assert!(
        envelopes
            .iter()
            .all(|m| !m.body.contains("欢迎") && !m.body.contains("组里")),
        "group messages travel encrypted"
    );
    carl.shutdown().await;
    bob.shutdown().await;

    // Restarted, the app reads the encrypted history from the store,
    // opened: the texts both ways, no line for the Welcome.
    drop(ui.keys);
    ui.runner.run().await.expect("the app stops");
    let mut ui = Ui::start(config(da.path(), "ann"))
        .await
        .expect("ann's app again");
    ui.type_line("/dm bob -e").await;
    ui.wait("the encrypted history, opened", |app, _| {
        shown_text(app, me, secret)
            && app.selected().is_some_and(|c| {
                app.title(c) == "🔒 bob"
                    && c.messages.values().any(|m| m.body["text"] == reply)
                    && c.messages
                        .values()
                        .all(|m| m.kind != confab_sdk::MessageKind::Encrypted)
            })
    })
    .await;
}
