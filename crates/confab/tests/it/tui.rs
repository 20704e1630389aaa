//! `confab chat`: the app's screens drawn on ratatui's `TestBackend`, and
//! the real runner driven by scripted keys against a real server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use confab::tui::{App, AppEvent, Command, Link, Runner, RunnerOptions};
use confab_sdk::proto::api::{
    ConversationKind, Friend, FriendRequest, Member, PresenceStatus, Role,
};
use confab_sdk::{
    Client, Conversation, E2ee, Event, MessageKind, MessagePage, MessageRecord, ReceiptKind,
    TypingState, User,
};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use serde_json::json;
use tokio::sync::mpsc;

// ---------------------------------------------------------------- helpers

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
                x += u16::try_from(unicode_width(cell.symbol()).max(1)).expect("width");
            }
            row.trim_end().to_owned()
        })
        .collect()
}

fn unicode_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

fn screen_of(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| app.render(f)).expect("draw");
    lines(terminal.backend().buffer())
}

/// The inside of the conversation pane at 80 columns (the list takes the
/// first 20, then a border).
fn right(screen: &[String]) -> Vec<String> {
    screen
        .iter()
        .map(|l| {
            let cut: String = l.chars().skip(21).take(58).collect();
            cut.trim_end().to_owned()
        })
        .collect()
}

/// The conversation list at 80 columns.
fn left(screen: &[String]) -> Vec<String> {
    screen
        .iter()
        .map(|l| l.chars().take(20).collect())
        .collect()
}

fn contains(screen: &[String], text: &str) -> bool {
    screen.iter().any(|l| l.contains(text))
}

fn line_with<'a>(screen: &'a [String], text: &str) -> &'a str {
    screen
        .iter()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} in\n{}", screen.join("\n")))
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_into(app: &mut App, text: &str) -> Vec<Command> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(app.on_key(key(KeyCode::Char(c))));
    }
    out.extend(app.on_key(key(KeyCode::Enter)));
    out
}

fn user(id: i64, name: &str) -> User {
    User {
        id,
        username: name.to_lowercase(),
        display_name: name.to_owned(),
        avatar_media_id: None,
        status_text: None,
        created_at: 0,
        hide_presence: None,
    }
}

fn member(id: i64, read_seq: i64) -> Member {
    Member {
        user_id: id,
        role: Role::Member,
        joined_seq: 0,
        read_seq,
    }
}

fn fake_direct(id: i64, me: i64, peer: i64, last_seq: i64, unread: i64, ts: i64) -> Conversation {
    Conversation {
        id,
        kind: ConversationKind::Direct,
        title: None,
        avatar_media_id: None,
        members_can_add: false,
        members: vec![member(me, last_seq), member(peer, 0)],
        member_count: 2,
        last_seq,
        last_message: None,
        read_seq: last_seq - unread,
        unread_count: unread,
        unread_mentions: 0,
        muted: false,
        created_at: ts,
        encrypted: false,
        mls_epoch: None,
    }
}

fn text(conv: i64, seq: i64, from: i64, body: &str) -> MessageRecord {
    MessageRecord {
        conversation_id: conv,
        seq,
        sender_id: from,
        client_msg_id: format!("m{conv}-{seq}"),
        kind: MessageKind::Text,
        body: json!({ "text": body }),
        ts: (12 * 60 + seq) * 60_000,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    }
}

/// Ann (1) with a direct chat with Bob (2, open) and one with Cid (3,
/// two unread); Bob is a friend and online, Cid is not a friend.
fn sample_app() -> App {
    let mut app = App::new(user(1, "Ann"));
    let _ = app.start();
    let _ = app.on_event(AppEvent::User(user(2, "Bob")));
    let _ = app.on_event(AppEvent::User(user(3, "Cid")));
    let _ = app.on_event(AppEvent::Friends(vec![Friend {
        user: user(2, "Bob"),
        since: 0,
        status: PresenceStatus::Online,
        last_seen: None,
    }]));
    let _ = app.on_event(AppEvent::Conversations(vec![
        fake_direct(10, 1, 2, 4, 0, 2_000),
        fake_direct(11, 1, 3, 2, 2, 1_000),
    ]));
    let _ = app.on_event(AppEvent::Sdk(Event::Connected {
        user_id: 1,
        device_id: 1,
    }));
    let _ = app.on_event(AppEvent::Sdk(Event::SyncComplete));
    let _ = app.on_event(AppEvent::History {
        conversation_id: 10,
        page: MessagePage {
            messages: vec![
                text(10, 1, 2, "hi ann"),
                text(10, 2, 1, "first of mine"),
                text(10, 3, 1, "second of mine"),
                text(10, 4, 1, "third of mine"),
            ],
            has_more: false,
            has_more_before: None,
        },
    });
    let receipt = |kind, seq| {
        AppEvent::Sdk(Event::Receipt {
            conversation_id: 10,
            user_id: 2,
            kind,
            seq,
        })
    };
    let _ = app.on_event(receipt(ReceiptKind::Delivered, 3));
    let _ = app.on_event(receipt(ReceiptKind::Read, 2));
    app
}

// ---------------------------------------------------------------- rendering

#[test]
fn list_shows_unread_counts_and_presence_dots() {
    let app = sample_app();
    let screen = left(&screen_of(&app, 80, 24));
    let bob = line_with(&screen, "Bob");
    assert!(bob.contains('●'), "online friend gets a dot: {bob:?}");
    let cid = line_with(&screen, "Cid");
    assert!(cid.contains("(2)"), "unread count: {cid:?}");
    assert!(
        !cid.contains('●') && !cid.contains('○'),
        "no dot for a stranger"
    );

    let mut app = app;
    let _ = app.on_event(AppEvent::Sdk(Event::Presence {
        user_id: 2,
        status: confab_sdk::PresenceStatus::Offline,
        last_seen: Some(1),
    }));
    let screen = left(&screen_of(&app, 80, 24));
    assert!(line_with(&screen, "Bob").contains('○'));
}

#[test]
fn message_pane_shows_senders_times_and_ticks() {
    let mut app = sample_app();
    let commands = type_into(&mut app, "on its way");
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::SendText { text, .. } if text == "on its way")),
        "{commands:?}"
    );
    let screen = right(&screen_of(&app, 80, 24));
    assert!(line_with(&screen, "hi ann").contains("12:01 Bob: hi ann"));
    assert!(line_with(&screen, "first of mine").ends_with("✓✓ read"));
    let second = line_with(&screen, "second of mine");
    assert!(
        second.ends_with("✓✓") && !second.contains("read"),
        "{second:?}"
    );
    let third = line_with(&screen, "third of mine");
    assert!(third.ends_with('✓') && !third.ends_with("✓✓"), "{third:?}");
    assert!(line_with(&screen, "on its way").ends_with("sending…"));
}

#[test]
fn media_system_edited_and_deleted_messages() {
    let mut app = sample_app();
    let mut image = text(10, 5, 2, "");
    image.kind = MessageKind::Image;
    image.body = json!({"media_id": "x", "width": 640, "height": 480});
    let mut file = text(10, 6, 2, "");
    file.kind = MessageKind::File;
    file.body =
        json!({"media_id": "y", "name": "name.pdf", "size": 1_200_000, "mime": "application/pdf"});
    let mut voice = text(10, 7, 2, "");
    voice.kind = MessageKind::Voice;
    voice.body = json!({"media_id": "z", "duration_ms": 2_500});
    let mut system = text(10, 8, 2, "");
    system.kind = MessageKind::System;
    system.body = json!({"event": "member_joined", "user_ids": [3], "by_user_id": 2});
    let mut edited = text(10, 9, 2, "fixed typo");
    edited.edited_at = Some(1);
    let mut deleted = text(10, 10, 2, "");
    deleted.deleted = true;
    for m in [image, file, voice, system, edited, deleted] {
        let _ = app.on_event(AppEvent::Sdk(Event::Message(m)));
    }
    let screen = screen_of(&app, 80, 24);
    for want in [
        "[image 640x480]",
        "[file name.pdf 1.2 MB]",
        "[voice 3s]",
        "— Bob added Cid",
        "fixed typo (edited)",
        "Bob: [deleted]",
    ] {
        assert!(
            contains(&screen, want),
            "{want:?} in\n{}",
            screen.join("\n")
        );
    }
}

#[test]
fn encrypted_conversation_shows_a_lock_and_sends_nothing_plain() {
    let mut app = App::new(user(1, "Ann"));
    let _ = app.start();
    let _ = app.on_event(AppEvent::User(user(2, "Bob")));
    let mut conv = fake_direct(10, 1, 2, 2, 0, 2_000);
    conv.encrypted = true;
    conv.mls_epoch = Some(1);
    let _ = app.on_event(AppEvent::Conversations(vec![conv]));
    let _ = app.on_event(AppEvent::Sdk(Event::Connected {
        user_id: 1,
        device_id: 1,
    }));
    let _ = app.on_event(AppEvent::Sdk(Event::SyncComplete));
    let mut commit = text(10, 1, 1, "");
    commit.kind = MessageKind::Encrypted;
    commit.body = json!({"ciphertext": "Y29tbWl0", "mls": "commit", "epoch": 0});
    let mut said = text(10, 2, 2, "");
    said.kind = MessageKind::Encrypted;
    said.body = json!({"ciphertext": "c2VjcmV0IHdvcmRz", "mls": "application", "epoch": 1});
    let _ = app.on_event(AppEvent::History {
        conversation_id: 10,
        page: MessagePage {
            messages: vec![commit, said],
            has_more: false,
            has_more_before: None,
        },
    });
    let screen = screen_of(&app, 100, 24);
    assert!(
        line_with(&left(&screen), "Bob").contains('🔒'),
        "a lock in the list:\n{}",
        screen.join("\n")
    );
    assert!(contains(&screen, "🔒 [encryption keys changed]"));
    assert!(
        contains(
            &screen,
            "Bob: 🔒 [encrypted: this device has no encryption key]"
        ),
        "{}",
        screen.join("\n")
    );
    assert!(!contains(&screen, "c2VjcmV0"), "no ciphertext shown");

    // Typing into it sends nothing the server would refuse, and says why.
    let commands = type_into(&mut app, "plain words");
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::SendText { .. } | Command::SendEncrypted { .. })),
        "{commands:?}"
    );
    let notice = app.notice().expect("a notice");
    assert!(notice.contains("confab login"), "{notice}");
}

#[test]
fn with_a_device_key_encrypted_messages_are_decrypted_and_sends_encrypted() {
    let mut app = App::new(user(1, "Ann")).with_e2ee(true);
    let _ = app.start();
    let _ = app.on_event(AppEvent::User(user(2, "Bob")));
    let mut conv = fake_direct(10, 1, 2, 3, 0, 2_000);
    conv.encrypted = true;
    let _ = app.on_event(AppEvent::Conversations(vec![conv]));
    let encrypted = |seq, from, mls: &str| {
        let mut m = text(10, seq, from, "");
        m.kind = MessageKind::Encrypted;
        m.body = json!({"ciphertext": "c2VjcmV0", "mls": mls, "epoch": 1});
        m
    };
    let out = app.on_event(AppEvent::History {
        conversation_id: 10,
        page: MessagePage {
            messages: vec![
                encrypted(1, 1, "commit"),
                encrypted(2, 2, "application"),
                encrypted(3, 2, "application"),
            ],
            has_more: false,
            has_more_before: None,
        },
    });
    assert!(
        out.contains(&Command::Decrypt {
            conversation_id: 10,
            from: 1
        }),
        "the page is handed to the MLS state: {out:?}"
    );
    assert!(contains(&screen_of(&app, 100, 24), "Bob: 🔒 decrypting…"));

    let seen = |seq, content| confab_sdk::E2eeMessage {
        seq,
        sender_id: 2,
        ts: 2_000,
        content,
    };
    let _ = app.on_event(AppEvent::Decrypted {
        conversation_id: 10,
        messages: vec![
            seen(1, confab_sdk::E2eeContent::Commit { epoch: 1 }),
            seen(
                2,
                confab_sdk::E2eeContent::Message {
                    kind: "text".into(),
                    body: json!({"text": "我们明天下午开会"}),
                },
            ),
            seen(
                3,
                confab_sdk::E2eeContent::Failed {
                    reason: "a wrong epoch".into(),
                },
            ),
        ],
    });
    let screen = screen_of(&app, 100, 24);
    assert!(contains(&screen, "🔒 [encryption keys changed]"));
    assert!(
        contains(&screen, "Bob: 我们明天下午开会"),
        "{}",
        screen.join("\n")
    );
    assert!(contains(&screen, "Bob: 🔒 [cannot decrypt: a wrong epoch]"));
    assert!(!contains(&screen, "decrypting"));

    // A new message goes through the MLS state too.
    let out = app.on_event(AppEvent::Sdk(Event::Message(encrypted(
        4,
        2,
        "application",
    ))));
    assert!(out.contains(&Command::Decrypt {
        conversation_id: 10,
        from: 4
    }));

    // Typing sends an encrypted message, shown pending until its ack.
    let commands = type_into(&mut app, "好的");
    let sent = commands
        .iter()
        .find(|c| matches!(c, Command::SendEncrypted { .. }))
        .unwrap_or_else(|| panic!("an encrypted send: {commands:?}"));
    assert!(
        matches!(sent, Command::SendEncrypted { conversation_id: 10, text, .. } if text == "好的")
    );
    assert!(!commands
        .iter()
        .any(|c| matches!(c, Command::SendText { .. })));
}

#[test]
fn typing_line_comes_and_goes() {
    let mut app = sample_app();
    let typing = |state| {
        AppEvent::Sdk(Event::Typing {
            conversation_id: 10,
            user_id: 2,
            state,
        })
    };
    let _ = app.on_event(typing(TypingState::Start));
    assert!(contains(&screen_of(&app, 80, 24), "Bob is typing…"));
    let _ = app.on_event(typing(TypingState::Stop));
    assert!(!contains(&screen_of(&app, 80, 24), "is typing"));
    // A start without a stop fades by itself.
    let _ = app.on_event(typing(TypingState::Start));
    let _ = app.on_event(AppEvent::Tick(Instant::now() + Duration::from_secs(30)));
    assert!(!contains(&screen_of(&app, 80, 24), "is typing"));
}

#[test]
fn my_typing_is_throttled_and_stops_on_send_or_idle() {
    let mut app = sample_app();
    let starts = |cmds: &[Command]| {
        cmds.iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Typing {
                        state: TypingState::Start,
                        ..
                    }
                )
            })
            .count()
    };
    let stops = |cmds: &[Command]| {
        cmds.iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Typing {
                        state: TypingState::Stop,
                        ..
                    }
                )
            })
            .count()
    };
    let cmds = type_into(&mut app, "hello");
    assert_eq!(starts(&cmds), 1, "one start for a burst of keys: {cmds:?}");
    assert_eq!(stops(&cmds), 1, "stop on send: {cmds:?}");

    let cmds = app.on_key(key(KeyCode::Char('x')));
    assert_eq!(starts(&cmds), 1);
    let cmds = app.on_event(AppEvent::Tick(Instant::now() + Duration::from_secs(30)));
    assert_eq!(stops(&cmds), 1, "stop after idling: {cmds:?}");
}

#[test]
fn help_overlay_opens_with_question_mark_and_closes_with_esc() {
    let mut app = sample_app();
    let _ = app.on_key(key(KeyCode::Char('?')));
    let screen = screen_of(&app, 80, 24);
    for want in [
        "Keys and commands",
        "/dm USER",
        "/group TITLE",
        "/file PATH",
        "Ctrl-C",
    ] {
        assert!(
            contains(&screen, want),
            "{want:?} in\n{}",
            screen.join("\n")
        );
    }
    let _ = app.on_key(key(KeyCode::Esc));
    assert!(!contains(&screen_of(&app, 80, 24), "Keys and commands"));
    // With text in the input, ? is just a character.
    let _ = app.on_key(key(KeyCode::Char('a')));
    let _ = app.on_key(key(KeyCode::Char('?')));
    assert_eq!(app.input(), "a?");
    assert!(app.overlay().is_none());
}

#[test]
fn upload_progress_bar() {
    let mut app = sample_app();
    let cmds = type_into(&mut app, "/file /tmp/report.bin");
    let Some(Command::SendFile { upload_id, .. }) = cmds
        .iter()
        .find(|c| matches!(c, Command::SendFile { .. }))
        .cloned()
    else {
        panic!("no upload in {cmds:?}");
    };
    let _ = app.on_event(AppEvent::UploadProgress {
        upload_id,
        sent: 450,
        total: 1000,
    });
    let screen = screen_of(&app, 80, 24);
    assert!(
        contains(&screen, "report.bin 45% of 1.0 KB"),
        "{}",
        screen.join("\n")
    );
    let _ = app.on_event(AppEvent::UploadDone {
        upload_id,
        result: Err("disk on fire".into()),
    });
    let screen = screen_of(&app, 80, 24);
    assert!(!contains(&screen, "45%"));
    assert!(contains(&screen, "sending report.bin failed"));
}

#[test]
fn status_line_follows_the_connection() {
    let mut app = sample_app();
    assert!(screen_of(&app, 80, 24)[23].contains("online"));
    let _ = app.on_event(AppEvent::Sdk(Event::Disconnected {
        reason: "reset".into(),
    }));
    assert_eq!(app.link(), &Link::Reconnecting("reset".into()));
    assert!(screen_of(&app, 80, 24)[23].contains("reconnecting…"));
    let _ = app.on_event(AppEvent::Sdk(Event::Connected {
        user_id: 1,
        device_id: 1,
    }));
    let cmds = app.on_event(AppEvent::Sdk(Event::SyncComplete));
    assert!(
        cmds.contains(&Command::LoadConversations),
        "refresh after a reconnect"
    );
    assert!(screen_of(&app, 80, 24)[23].contains("online"));
}

#[test]
fn friend_requests_are_listed() {
    let mut app = sample_app();
    let _ = app.on_event(AppEvent::FriendRequests(vec![FriendRequest {
        id: 7,
        from_user: user(4, "Dee"),
        to_user: user(1, "Ann"),
        message: None,
        created_at: 0,
    }]));
    let screen = screen_of(&app, 80, 24);
    assert!(contains(&screen, "+ dee /accept"), "{}", screen.join("\n"));
    let cmds = type_into(&mut app, "/decline dee");
    assert_eq!(cmds, vec![Command::DeclineFriendRequest(7)]);
    let cmds = type_into(&mut app, "/accept");
    assert_eq!(cmds, vec![Command::AcceptFriendRequest(7)]);
}

#[test]
fn narrow_terminal_shows_one_pane_at_a_time() {
    let mut app = sample_app();
    let screen = screen_of(&app, 40, 16);
    assert!(contains(&screen, "hi ann"), "{}", screen.join("\n"));
    assert!(!contains(&screen, "Chats"));
    let _ = app.on_key(key(KeyCode::Tab));
    let screen = screen_of(&app, 40, 16);
    assert!(contains(&screen, "Chats") && contains(&screen, "Cid"));
    assert!(!contains(&screen, "hi ann"));
    // Nothing breaks on a tiny terminal.
    let _ = screen_of(&app, 10, 3);
    let _ = app.on_key(key(KeyCode::Char('?')));
    let _ = screen_of(&app, 12, 4);
}

#[test]
fn slash_command_mistakes_say_what_to_do() {
    let mut app = sample_app();
    assert!(type_into(&mut app, "/dm").is_empty());
    assert_eq!(app.notice(), Some("usage: /dm USER"));
    assert!(type_into(&mut app, "/frobnicate").is_empty());
    assert!(app.notice().is_some_and(|n| n.contains("press ? for help")));
    assert!(type_into(&mut app, "/leave").is_empty(), "not a group");
    let cmds = type_into(&mut app, "/group \"Team chat\" bob cid");
    assert_eq!(
        cmds,
        vec![Command::CreateGroup {
            title: "Team chat".into(),
            usernames: vec!["bob".into(), "cid".into()],
            encrypted: false,
            ticket: 1,
        }]
    );
    // -e / --encrypted anywhere: the end-to-end encrypted kind.
    let cmds = type_into(&mut app, "/group \"密友 chat\" bob -e cid");
    assert_eq!(
        cmds,
        vec![Command::CreateGroup {
            title: "密友 chat".into(),
            usernames: vec!["bob".into(), "cid".into()],
            encrypted: true,
            ticket: 2,
        }]
    );
    let cmds = type_into(&mut app, "/dm --encrypted bob");
    assert!(
        matches!(cmds.as_slice(), [Command::OpenDirect { username, encrypted: true, .. }] if username == "bob"),
        "{cmds:?}"
    );
}

#[test]
fn a_late_answer_to_an_earlier_dm_does_not_take_over() {
    // Bob's chat (10) is open; `/dm cid` then `/dm bob`, answered out of
    // order: bob's first, cid's late.
    let mut app = sample_app();
    let ticket = |cmds: &[Command]| match cmds {
        [Command::OpenDirect { ticket, .. }] => *ticket,
        other => panic!("expected one OpenDirect, got {other:?}"),
    };
    let to_cid = ticket(&type_into(&mut app, "/dm cid"));
    let to_bob = ticket(&type_into(&mut app, "/dm bob"));
    assert!(to_bob > to_cid);
    let _ = app.on_event(AppEvent::Opened(fake_direct(10, 1, 2, 4, 0, 2_000), to_bob));
    assert_eq!(app.selected().map(|c| c.id()), Some(10));
    let _ = app.on_event(AppEvent::Opened(fake_direct(11, 1, 3, 2, 2, 1_000), to_cid));
    assert_eq!(
        app.selected().map(|c| c.id()),
        Some(10),
        "the late answer to /dm cid must not replace bob's chat"
    );
}

// ---------------------------------------------------------------- flows

/// The real runner on a `TestBackend`, with a channel for scripted keys.
struct Ui {
    runner: Runner<TestBackend>,
    keys: mpsc::Sender<TermEvent>,
}

impl Ui {
    async fn new(client: Client) -> Ui {
        Ui::with_e2ee(client, None).await
    }

    async fn with_e2ee(client: Client, e2ee: Option<Arc<E2ee>>) -> Ui {
        let (keys, rx) = mpsc::channel(1024);
        let options = RunnerOptions {
            tick: Duration::from_millis(50),
            e2ee,
            ..RunnerOptions::default()
        };
        let runner = Runner::new(client, TestBackend::new(80, 24), rx, options)
            .await
            .expect("runner starts");
        Ui { runner, keys }
    }

    async fn started(client: Client) -> Ui {
        let mut ui = Ui::new(client).await;
        ui.wait("online", |app, _| app.link() == &Link::Online)
            .await;
        ui
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
        for c in line.chars() {
            self.send_key(key(KeyCode::Char(c))).await;
        }
        self.send_key(key(KeyCode::Enter)).await;
        while self.keys.capacity() < self.keys.max_capacity() {
            self.runner.step().await.expect("step");
        }
    }

    async fn send_key(&self, k: KeyEvent) {
        self.keys.send(TermEvent::Key(k)).await.expect("key");
    }

    async fn open_dm(&mut self, with: &str) {
        self.type_line(&format!("/dm {with}")).await;
        let with = with.to_owned();
        self.wait(&format!("the chat with {with}"), move |app, _| {
            app.selected().is_some_and(|c| app.title(c) == with)
        })
        .await;
    }
}

fn text_of(e: &Event) -> Option<&str> {
    e.as_message()
        .and_then(|m| m.body.get("text"))
        .and_then(|t| t.as_str())
}

#[tokio::test]
async fn direct_chat_typing_replies_and_read_ticks() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_user) = app.user("bob").await;
    let mut bob_conn = connect(&bob).await;
    let mut ui = Ui::started(ann).await;

    ui.open_dm("bob").await;
    ui.type_line("hello bob").await;
    ui.wait("the ack", |_, s| {
        contains(s, "You: hello bob") && !contains(s, "sending…")
    })
    .await;

    // Bob saw ann typing, then the message.
    bob_conn
        .wait_for(WAIT, |e| {
            matches!(
                e,
                Event::Typing {
                    state: TypingState::Start,
                    ..
                }
            )
        })
        .await
        .expect("typing start");
    let got = bob_conn
        .wait_for(WAIT, |e| text_of(e) == Some("hello bob"))
        .await
        .expect("bob gets the message");
    let msg = got.as_message().expect("message").clone();

    // Bob types and replies; ann sees both.
    bob_conn
        .typing(msg.conversation_id, TypingState::Start)
        .await
        .expect("typing");
    ui.wait_text("bob is typing…").await;
    bob_conn
        .send_text(msg.conversation_id, "hi ann")
        .await
        .expect("reply");
    ui.wait_text("bob: hi ann").await;
    ui.wait("typing line cleared", |_, s| !contains(s, "is typing"))
        .await;

    // Bob reads: ann's message gets the read tick.
    bob_conn
        .read(msg.conversation_id, msg.seq)
        .await
        .expect("read");
    ui.wait("read tick", |_, s| {
        right(s)
            .iter()
            .any(|l| l.contains("hello bob") && l.ends_with("✓✓ read"))
    })
    .await;
    assert_eq!(ui.app().bells(), 0, "no bell for the open conversation");
    let _ = bob_user;
}

/// A device that logs in with a device key (as `confab login` does) in
/// its own session dir.
async fn e2ee_device(base_url: &str, name: &str) -> (Arc<E2ee>, tempfile::TempDir) {
    Client::new(base_url)
        .register(name, PASSWORD, None)
        .await
        .expect("register");
    let dir = tempfile::tempdir().expect("tempdir");
    let e2ee = E2ee::login(
        Client::new(base_url),
        dir.path(),
        name,
        PASSWORD,
        Some("tui"),
    )
    .await
    .expect("e2ee login");
    (Arc::new(e2ee), dir)
}

#[tokio::test]
async fn an_encrypted_chat_is_read_and_written_in_the_terminal_app() {
    let app = spawn_app().await;
    let (ann, _ann_dir) = e2ee_device(&app.base_url, "ann").await;
    let (bob, _bob_dir) = e2ee_device(&app.base_url, "bob").await;
    let bob_id = bob.client().session().expect("session").user.id;
    let conv = ann.create_direct(bob_id).await.expect("encrypted direct");
    assert!(conv.encrypted);
    ann.send_text(conv.id, "我们明天下午开会讨论分布式系统")
        .await
        .expect("send");

    // Bob's terminal app reads what was said before it started…
    let mut ui = Ui::with_e2ee(bob.client().clone(), Some(bob.clone())).await;
    ui.wait("online", |app, _| app.link() == &Link::Online)
        .await;
    ui.wait_text("ann: 我们明天下午开会讨论分布式系统").await;
    // …and what comes live, after a key change it must apply first.
    ann.update_keys(conv.id).await.expect("update keys");
    ann.send_text(conv.id, "第三条 after new keys")
        .await
        .expect("send");
    ui.wait_text("ann: 第三条 after new keys").await;
    ui.wait_text("🔒 [encryption keys").await;

    // Bob answers from the app: encrypted, acked, and ann reads it.
    ui.type_line("好的，明天见").await;
    ui.wait("the ack", |_, s| {
        contains(s, "You: 好的，明天见") && !contains(s, "sending…")
    })
    .await;
    let said: Vec<String> = ann
        .history(conv.id)
        .await
        .expect("history")
        .into_iter()
        .filter_map(|m| match m.content {
            confab_sdk::E2eeContent::Message { body, .. } => {
                body.get("text").and_then(|t| t.as_str()).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        [
            "我们明天下午开会讨论分布式系统",
            "第三条 after new keys",
            "好的，明天见"
        ]
    );
    // The server got ciphertext only.
    let stored = ann
        .client()
        .history(conv.id, confab_sdk::HistoryQuery::after(0, 100))
        .await
        .expect("server history");
    assert!(stored
        .messages
        .iter()
        .all(|m| m.kind == MessageKind::Encrypted || m.kind == MessageKind::System));
    assert!(!serde_json::to_string(&stored.messages)
        .expect("json")
        .contains("明天见"));
    let screen = ui.screen();
    assert!(
        !contains(&screen, "decrypting") && !contains(&screen, "cannot decrypt"),
        "{}",
        screen.join("\n")
    );

    // Bob makes an encrypted group from the app, then adds cat: each
    // joins the MLS group (a Welcome for their device) and reads him.
    let (cat, _cat_dir) = e2ee_device(&app.base_url, "cat").await;
    ui.type_line("/group 密友 ann -e").await;
    ui.wait("the new group open", |app, _| {
        app.selected()
            .is_some_and(|c| app.title(c) == "🔒 密友" && c.conv.encrypted)
    })
    .await;
    let group = ui.app().selected().expect("open").conv.id;
    ui.type_line("/add cat").await;
    // The app's notice, once cat's device is in the MLS group (the
    // server's "bob added cat" line comes before that).
    ui.wait("cat added", |app, _| app.notice() == Some("added cat"))
        .await;
    ui.type_line("欢迎 cat").await;
    ui.wait("the ack", |_, s| {
        contains(s, "You: 欢迎 cat") && !contains(s, "sending…")
    })
    .await;
    for (who, d) in [("ann", &ann), ("cat", &cat)] {
        let said: Vec<String> = d
            .history(group)
            .await
            .expect("history")
            .into_iter()
            .filter_map(|m| match m.content {
                confab_sdk::E2eeContent::Message { body, .. } => {
                    body.get("text").and_then(|t| t.as_str()).map(str::to_owned)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            said,
            ["欢迎 cat"],
            "{who}: {:?}",
            d.history(group).await.expect("history")
        );
    }
}

#[tokio::test]
async fn friend_request_sent_and_accepted_in_the_ui() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let mut ann_ui = Ui::started(ann).await;
    let mut bob_ui = Ui::started(bob).await;

    ann_ui.open_dm("bob").await;
    ann_ui.type_line("/friend bob").await;
    ann_ui.wait_text("friend request sent to bob").await;

    bob_ui.wait_text("+ ann /accept").await;
    bob_ui.type_line("/accept ann").await;
    bob_ui.wait_text("you and ann are friends now").await;
    bob_ui
        .wait("request gone", |app, s| {
            app.friend_requests().is_empty() && !contains(s, "/accept")
        })
        .await;

    // Ann learns it, and bob (online) gets a presence dot in her list.
    ann_ui.wait_text("you and bob are friends now").await;
    ann_ui
        .wait("bob online", |_, s| s.iter().any(|l| l.contains("● bob")))
        .await;
}

#[tokio::test]
async fn file_upload_shows_progress_and_arrives_intact() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let mut bob_conn = connect(&bob).await;
    let mut ui = Ui::started(ann).await;
    ui.open_dm("bob").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.bin");
    let bytes: Vec<u8> = (0..6_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &bytes).expect("write");

    ui.type_line(&format!("/file {}", path.display())).await;
    assert!(
        contains(&ui.screen(), "data.bin 0%"),
        "a progress bar right away:\n{}",
        ui.screen().join("\n")
    );
    ui.wait_text("You: [file data.bin 6.0 MB]").await;
    ui.wait("upload done", |app, s| {
        app.uploads().is_empty() && !contains(s, "% of")
    })
    .await;

    let got = bob_conn
        .wait_for(WAIT, |e| {
            e.as_message().is_some_and(|m| m.kind == MessageKind::File)
        })
        .await
        .expect("bob gets the file message");
    let body = &got.as_message().expect("message").body;
    assert_eq!(body["name"], "data.bin");
    let media_id = body["media_id"].as_str().expect("media id");
    let downloaded = bob.media_bytes(media_id).await.expect("download");
    assert!(downloaded == bytes, "same bytes");

    // An image goes out as an image message.
    let png = dir.path().join("pic.png");
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 7]));
    img.save_with_format(&png, image::ImageFormat::Png)
        .expect("png");
    ui.type_line(&format!("/file {}", png.display())).await;
    ui.wait_text("You: [image 64x48]").await;
    let got = bob_conn
        .wait_for(WAIT, |e| {
            e.as_message().is_some_and(|m| m.kind == MessageKind::Image)
        })
        .await
        .expect("bob gets the image");
    assert_eq!(got.as_message().expect("message").body["width"], 64);
}

#[tokio::test]
async fn bell_rings_for_background_conversations_unless_muted() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let (cid, _) = app.user("cid").await;
    let with_cid = direct(&cid, &ann_user).await.id;
    let with_bob = direct(&bob, &ann_user).await.id;
    let send = |client: &Client, conv, text: &str| {
        let client = client.clone();
        let text = text.to_owned();
        async move {
            client
                .send_http(
                    conv,
                    &confab_sdk::new_client_msg_id(),
                    MessageKind::Text,
                    json!({ "text": text }),
                )
                .await
                .expect("send")
        }
    };

    // What was sent before the app started does not ring.
    send(&bob, with_bob, "old news").await;
    send(&cid, with_cid, "old cid").await;
    let mut ui = Ui::started(ann).await;
    ui.open_dm("cid").await;
    ui.open_dm("bob").await;
    ui.wait_text("bob: old news").await;
    assert_eq!(ui.app().bells(), 0);

    // A message in the background conversation rings and counts as unread.
    send(&cid, with_cid, "ping from cid").await;
    ui.wait("a bell", |app, _| app.bells() == 1).await;
    ui.wait("unread count", |_, s| {
        s.iter().any(|l| l.contains("cid") && l.contains("(1)"))
    })
    .await;

    // The open conversation does not ring.
    send(&bob, with_bob, "hello from bob").await;
    ui.wait_text("bob: hello from bob").await;

    // Muted, the background conversation stays quiet.
    ui.open_dm("cid").await;
    ui.type_line("/mute").await;
    ui.wait("muted", |app, _| {
        app.chat(with_cid).is_some_and(|c| c.conv.muted)
    })
    .await;
    ui.open_dm("bob").await;
    send(&cid, with_cid, "second ping").await;
    ui.wait("cid's second message", |app, _| {
        app.chat(with_cid)
            .is_some_and(|c| c.last_seq() >= 3 && c.unread == 1)
    })
    .await;
    assert_eq!(ui.app().bells(), 1, "no bell for a muted conversation");
}

#[tokio::test]
async fn reconnect_shows_in_the_status_line_and_delivers_once() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let mut bob_conn = connect(&bob).await;
    let mut ui = Ui::started(ann).await;
    ui.open_dm("bob").await;
    assert!(ui.screen()[23].contains("online"));

    ui.runner
        .connection()
        .kill_transport()
        .await
        .expect("kill transport");
    ui.wait("reconnecting", |_, s| s[23].contains("reconnecting…"))
        .await;
    ui.type_line("sent while away").await;
    ui.wait("back online", |app, s| {
        app.link() == &Link::Online && s[23].contains("online")
    })
    .await;
    ui.wait("the ack", |_, s| {
        s.iter()
            .any(|l| l.contains("You: sent while away") && l.contains('✓'))
    })
    .await;
    ui.type_line("after").await;

    let mut seen = 0;
    loop {
        let e = bob_conn
            .wait_for(WAIT, |e| e.as_message().is_some())
            .await
            .expect("bob gets messages");
        match text_of(&e) {
            Some("sent while away") => seen += 1,
            Some("after") => break,
            _ => {}
        }
    }
    assert_eq!(seen, 1, "delivered exactly once");
    let screen = ui.screen();
    let copies = screen
        .iter()
        .filter(|l| l.contains("sent while away"))
        .count();
    assert_eq!(copies, 1, "shown once:\n{}", screen.join("\n"));
}

#[tokio::test]
async fn older_history_loads_when_scrolling_past_the_top() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let conv = direct(&bob, &ann_user).await.id;
    for i in 1..=120 {
        bob.send_http(
            conv,
            &confab_sdk::new_client_msg_id(),
            MessageKind::Text,
            json!({ "text": format!("line {i}") }),
        )
        .await
        .expect("send");
    }
    let mut ui = Ui::started(ann).await;
    ui.open_dm("bob").await;
    ui.wait_text("bob: line 120").await;
    ui.wait("first page", |app, _| {
        app.chat(conv).is_some_and(|c| !c.loading)
    })
    .await;
    for _ in 0..15 {
        ui.send_key(key(KeyCode::PageUp)).await;
        while ui.keys.capacity() < ui.keys.max_capacity() {
            ui.runner.step().await.expect("step");
        }
        ui.wait("the page", |app, _| {
            app.chat(conv).is_some_and(|c| !c.loading)
        })
        .await;
    }
    ui.wait("every message loaded", |app, _| {
        app.chat(conv).is_some_and(|c| c.messages.len() == 120)
    })
    .await;
    ui.wait("the first message", |_, s| {
        right(s).iter().any(|l| l.ends_with("bob: line 1"))
    })
    .await;
    ui.wait_text("(start of the conversation)").await;
}

#[tokio::test]
async fn ctrl_c_quits_the_runner() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let ui = Ui::started(ann).await;
    ui.keys
        .send(TermEvent::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )))
        .await
        .expect("key");
    tokio::time::timeout(WAIT, ui.runner.run())
        .await
        .expect("quits in time")
        .expect("quits cleanly");
}

#[test]
fn notices_fade_and_esc_clears_them() {
    let mut app = sample_app();
    let _ = app.on_event(AppEvent::Notice("friend request sent to bob".into()));
    let _ = app.on_event(AppEvent::Tick(Instant::now()));
    assert!(screen_of(&app, 80, 24)[23].contains("friend request sent to bob"));
    let _ = app.on_event(AppEvent::Tick(Instant::now() + Duration::from_secs(60)));
    assert_eq!(app.notice(), None);
    let _ = app.on_event(AppEvent::Notice("again".into()));
    let _ = app.on_key(key(KeyCode::Esc));
    assert_eq!(app.notice(), None);
}

#[tokio::test]
async fn groups_are_made_changed_and_left_from_the_input_line() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (_bob, _) = app.user("bob").await;
    let (_cid, _) = app.user("cid").await;
    let mut ui = Ui::started(ann).await;

    ui.type_line("/group \"Book club\" bob").await;
    ui.wait("the new group", |app, _| {
        app.selected().is_some_and(|c| app.title(c) == "Book club")
    })
    .await;
    ui.wait_text("Book club (2 members)").await;
    ui.wait_text("— ann created the group Book club").await;

    ui.type_line("/add cid").await;
    ui.wait_text("— ann added cid").await;
    ui.wait_text("Book club (3 members)").await;
    ui.type_line("/kick cid").await;
    ui.wait_text("— ann removed cid").await;

    ui.type_line("/leave").await;
    ui.wait("the group gone", |app, s| {
        app.chats().is_empty() && !contains(s, "Book club")
    })
    .await;
}

#[tokio::test]
async fn edits_and_reactions_show_up() {
    let app = spawn_app().await;
    let (ann, ann_user) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let conv = direct(&bob, &ann_user).await.id;
    let sent = bob
        .send_http(
            conv,
            &confab_sdk::new_client_msg_id(),
            MessageKind::Text,
            json!({ "text": "helo" }),
        )
        .await
        .expect("send");
    let mut ui = Ui::started(ann).await;
    ui.open_dm("bob").await;
    ui.wait_text("bob: helo").await;

    bob.edit_message(conv, sent.seq, json!({ "text": "hello" }))
        .await
        .expect("edit");
    ui.wait_text("bob: hello (edited)").await;
    bob.react(conv, sent.seq, "+1", true).await.expect("react");
    ui.wait_text("bob: hello (edited) [+11]").await;
    bob.delete_message(conv, sent.seq).await.expect("delete");
    ui.wait_text("bob: [deleted]").await;
}

fn form_keys(text: &str) -> Vec<TermEvent> {
    text.chars()
        .map(|c| match c {
            '\t' => TermEvent::Key(key(KeyCode::Tab)),
            '\n' => TermEvent::Key(key(KeyCode::Enter)),
            c => TermEvent::Key(key(KeyCode::Char(c))),
        })
        .collect()
}

#[tokio::test]
async fn login_form_logs_in_registers_and_shows_errors() {
    use confab::tui::login::run_form;
    let app = spawn_app().await;
    let (_ann, _) = app.user("ann").await;
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");

    // A wrong password: the error shows, the form stays until Esc.
    let client = app.client();
    let (tx, mut rx) = mpsc::channel(64);
    for k in form_keys("ann\twrong password\n") {
        tx.send(k).await.expect("key");
    }
    tx.send(TermEvent::Key(key(KeyCode::Esc)))
        .await
        .expect("key");
    let logged_in = run_form(&mut terminal, &mut rx, &client, None)
        .await
        .expect("form");
    assert!(!logged_in && client.session().is_none());
    let screen = lines(terminal.backend().buffer());
    assert!(contains(&screen, "Confab: log in"), "{}", screen.join("\n"));
    assert!(contains(&screen, "username: ann"));
    assert!(
        !contains(&screen, "wrong password"),
        "the password is masked"
    );
    assert!(
        contains(&screen, "invalid_credentials"),
        "{}",
        screen.join("\n")
    );

    // The right one logs in.
    for k in form_keys(&format!("ann\t{PASSWORD}\n")) {
        tx.send(k).await.expect("key");
    }
    assert!(run_form(&mut terminal, &mut rx, &client, None)
        .await
        .expect("form"));
    assert_eq!(client.session().expect("session").user.username, "ann");

    // F2 registers a new account, then logs in.
    let client = app.client();
    tx.send(TermEvent::Key(key(KeyCode::F(2))))
        .await
        .expect("key");
    for k in form_keys(&format!("zed\t{PASSWORD}\n")) {
        tx.send(k).await.expect("key");
    }
    // With a folder for the device's keys (as `confab chat` passes), the
    // login makes a device key, so encrypted conversations work here.
    let keys = tempfile::tempdir().expect("tempdir");
    assert!(run_form(&mut terminal, &mut rx, &client, Some(keys.path()))
        .await
        .expect("form"));
    assert_eq!(client.session().expect("session").user.username, "zed");
    assert!(keys.path().join(confab_sdk::e2ee::KEY_FILE).exists());
    let e2ee = E2ee::open(client.clone(), keys.path())
        .await
        .expect("the device's MLS state opens");
    let me = client.session().expect("session");
    let devices = e2ee.client().devices(me.user.id).await.expect("devices");
    assert!(
        devices
            .iter()
            .any(|d| d.device_id == me.device_id && d.public_key.is_some()),
        "the device registered its key: {devices:?}"
    );
}

#[test]
fn clicking_a_conversation_opens_it() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = sample_app();
    let screen = screen_of(&app, 80, 24);
    let row = left(&screen)
        .iter()
        .position(|l| l.contains("Cid"))
        .expect("Cid in the list");
    let click = |row: usize| {
        TermEvent::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 5,
            row: u16::try_from(row).expect("row"),
            modifiers: KeyModifiers::NONE,
        })
    };
    let cmds = app.on_terminal(click(row));
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::LoadHistory {
                conversation_id: 11,
                ..
            }
        )),
        "{cmds:?}"
    );
    assert_eq!(app.selected().map(|c| c.id()), Some(11));
    // A click on an empty row changes nothing.
    let _ = screen_of(&app, 80, 24);
    assert!(app.on_terminal(click(20)).is_empty());
    assert_eq!(app.selected().map(|c| c.id()), Some(11));
}

#[test]
fn any_terminal_size_and_any_text_draws_without_panicking() {
    let mut app = sample_app();
    let long = "word ".repeat(200);
    for (seq, body) in [
        (5, long.as_str()),
        (
            6,
            "宽字符 and emoji 🎉🎉 mixed\twith\u{7}controls\nand newlines",
        ),
        (7, ""),
    ] {
        let _ = app.on_event(AppEvent::Sdk(Event::Message(text(10, seq, 2, body))));
    }
    let _ = type_into(&mut app, "/file /tmp/a.bin");
    let _ = type_into(&mut app, "/file /tmp/b.bin");
    for c in "宽🎉 typed but not sent, long enough to scroll the input line sideways".chars() {
        let _ = app.on_key(key(KeyCode::Char(c)));
    }
    for (w, h) in [
        (1, 1),
        (2, 2),
        (10, 3),
        (20, 5),
        (59, 10),
        (60, 12),
        (80, 24),
        (200, 60),
    ] {
        let _ = screen_of(&app, w, h);
    }
    let _ = app.on_key(key(KeyCode::F(1)));
    for (w, h) in [(1, 1), (15, 4), (80, 24)] {
        let _ = screen_of(&app, w, h);
    }
    let screen = screen_of(&app, 80, 24);
    assert!(contains(&screen, "Keys and commands"));
}
