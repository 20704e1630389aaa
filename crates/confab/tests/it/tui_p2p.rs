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
                    "timed out waiting for {what}; screen:\n{}",
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
