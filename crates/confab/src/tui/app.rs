//! The app's state, its accessors and the state changes keys lead to. No IO:
//! everything that must happen outside comes out as [`Command`]s.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use confab_sdk::proto::api::FriendRequest;
use confab_sdk::{ConversationId, TypingState, User, UserId};
use ratatui::layout::{Position, Rect};

use super::chat::{Chat, Pending, Upload};
use super::commands::Command;

/// Send `typing start` again at most this often while keys keep coming.
pub const TYPING_RESEND: Duration = Duration::from_secs(3);
/// Send `typing stop` after this long without a key.
pub const TYPING_IDLE: Duration = Duration::from_secs(4);
/// Forget someone's `typing start` after this long without news.
pub const TYPING_SHOWN: Duration = Duration::from_secs(8);
/// How long a notice from an action result stays in the status line.
pub const NOTICE_SHOWN: Duration = Duration::from_secs(20);
/// How many messages one PgUp/PgDn moves.
pub const PAGE: usize = 10;
/// History page size.
pub const HISTORY_PAGE: u32 = 50;

/// Where keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list.
    List,
    /// The input line.
    Input,
}

/// A window drawn over everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// The key bindings and commands.
    Help,
}

/// The state of the live connection, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Opening the first connection.
    Connecting,
    /// Connected, catching up on what was missed.
    Syncing,
    /// Connected and caught up.
    Online,
    /// Lost; the SDK is reconnecting (the reason, for the curious).
    Reconnecting(String),
}

/// The whole state of the chat app.
#[derive(Debug)]
pub struct App {
    pub(crate) me: User,
    pub(crate) chats: Vec<Chat>,
    pub(crate) selected: Option<ConversationId>,
    pub(crate) users: HashMap<UserId, User>,
    pub(crate) requested_users: HashSet<UserId>,
    pub(crate) online: HashMap<UserId, bool>,
    pub(crate) friend_requests: Vec<FriendRequest>,
    pub(crate) focus: Focus,
    pub(crate) overlay: Option<Overlay>,
    pub(crate) input: String,
    /// Cursor position in `input`, in chars.
    pub(crate) cursor: usize,
    pub(crate) link: Link,
    pub(crate) notice: Option<String>,
    /// The notice as the last tick saw it, and since when (it fades after
    /// [`NOTICE_SHOWN`]).
    pub(crate) notice_seen: (Option<String>, Instant),
    pub(crate) uploads: Vec<Upload>,
    pub(crate) next_upload: u64,
    /// The conversation I told I am typing, and when.
    pub(crate) typing_sent: Option<(ConversationId, Instant)>,
    pub(crate) last_key: Instant,
    pub(crate) now: Instant,
    pub(crate) bells: u64,
    pub(crate) quit: bool,
    /// Whether the conversation list arrived at least once.
    pub(crate) list_loaded: bool,
    /// The ticket of the latest `/dm` or `/group`: only its answer selects
    /// the conversation (an earlier one answered late must not take over).
    pub(crate) open_ticket: u64,
    /// Whether the connection finished a sync at least once.
    pub(crate) synced_once: bool,
    /// Whether this device can encrypt and decrypt (it has a device key
    /// and its MLS state is open): see [`App::with_e2ee`].
    pub(crate) e2ee: bool,
    /// Where the last frame put things the mouse can click.
    pub(crate) clickable: RefCell<Clickable>,
}

/// Screen areas of the last frame that react to clicks (written while
/// drawing, read by the mouse handler).
#[derive(Debug, Clone, Default)]
pub(crate) struct Clickable {
    /// The inside of the conversation list.
    pub list: Rect,
    /// The conversation on each row of the list (from its top).
    pub rows: Vec<Option<ConversationId>>,
    /// The input box.
    pub input: Rect,
}

impl App {
    /// A fresh app for the logged-in user `me`.
    pub fn new(me: User) -> App {
        let now = Instant::now();
        App {
            me,
            chats: Vec::new(),
            selected: None,
            users: HashMap::new(),
            requested_users: HashSet::new(),
            online: HashMap::new(),
            friend_requests: Vec::new(),
            focus: Focus::Input,
            overlay: None,
            input: String::new(),
            cursor: 0,
            link: Link::Connecting,
            notice: None,
            notice_seen: (None, now),
            uploads: Vec::new(),
            next_upload: 1,
            typing_sent: None,
            last_key: now,
            now,
            bells: 0,
            quit: false,
            list_loaded: false,
            open_ticket: 0,
            synced_once: false,
            e2ee: false,
            clickable: RefCell::new(Clickable::default()),
        }
    }

    /// Whether this device takes part in end-to-end encrypted
    /// conversations (it sends [`Command::SendEncrypted`] and
    /// [`Command::Decrypt`] there); without it those conversations show
    /// placeholders and refuse sends with an explanation.
    pub fn with_e2ee(mut self, on: bool) -> App {
        self.e2ee = on;
        self
    }

    /// What to fetch first.
    pub fn start(&mut self) -> Vec<Command> {
        let me = self.me.clone();
        self.users.insert(me.id, me);
        vec![
            Command::LoadConversations,
            Command::LoadFriends,
            Command::LoadFriendRequests,
        ]
    }

    /// The logged-in user.
    pub fn me(&self) -> &User {
        &self.me
    }

    /// Conversations, most recent activity first.
    pub fn chats(&self) -> &[Chat] {
        &self.chats
    }

    /// The open conversation.
    pub fn selected(&self) -> Option<&Chat> {
        let id = self.selected?;
        self.chats.iter().find(|c| c.id() == id)
    }

    /// A conversation by id.
    pub fn chat(&self, id: ConversationId) -> Option<&Chat> {
        self.chats.iter().find(|c| c.id() == id)
    }

    pub(crate) fn chat_mut(&mut self, id: ConversationId) -> Option<&mut Chat> {
        self.chats.iter_mut().find(|c| c.id() == id)
    }

    /// Incoming friend requests.
    pub fn friend_requests(&self) -> &[FriendRequest] {
        &self.friend_requests
    }

    /// Where keys go.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// The overlay shown, if any.
    pub fn overlay(&self) -> Option<Overlay> {
        self.overlay
    }

    /// The input line.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The connection state.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The last notice (action results, errors).
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Uploads in progress.
    pub fn uploads(&self) -> &[Upload] {
        &self.uploads
    }

    /// How many times the bell rang.
    pub fn bells(&self) -> u64 {
        self.bells
    }

    /// Whether the app wants to end.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Whether a user is online: `None` when unknown (not a friend).
    pub fn is_online(&self, user: UserId) -> Option<bool> {
        self.online.get(&user).copied()
    }

    /// A user's display name (or `#id` until the profile arrives).
    pub fn name(&self, user: UserId) -> String {
        match self.users.get(&user) {
            Some(u) if !u.display_name.is_empty() => u.display_name.clone(),
            Some(u) => u.username.clone(),
            None => format!("#{user}"),
        }
    }

    /// A conversation's title: the group title, or the other person's name;
    /// a lock in front of an end-to-end encrypted one.
    pub fn title(&self, chat: &Chat) -> String {
        let plain = self.plain_title(chat);
        if chat.conv.encrypted {
            format!("🔒 {plain}")
        } else {
            plain
        }
    }

    fn plain_title(&self, chat: &Chat) -> String {
        if let Some(t) = chat.conv.title.as_deref().filter(|t| !t.is_empty()) {
            return t.to_owned();
        }
        match chat.peer(self.me.id) {
            Some(peer) => self.name(peer),
            None if chat.is_direct() => "(just me)".to_owned(),
            None => format!("group #{}", chat.id()),
        }
    }

    /// Who is typing in the open conversation, as a line (empty if nobody).
    pub fn typing_line(&self) -> String {
        let Some(chat) = self.selected() else {
            return String::new();
        };
        let mut names: Vec<String> = chat
            .typing
            .iter()
            .filter(|(_, until)| **until > self.now)
            .map(|(u, _)| self.name(*u))
            .collect();
        names.sort();
        match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [a, b] => format!("{a} and {b} are typing…"),
            _ => "several people are typing…".to_owned(),
        }
    }

    /// Asks for a user's profile once.
    pub(crate) fn want_user(&mut self, user: UserId, out: &mut Vec<Command>) {
        if !self.users.contains_key(&user) && self.requested_users.insert(user) {
            out.push(Command::LoadUser(user));
        }
    }

    /// Opens a conversation: loads its history the first time, marks it read.
    pub(crate) fn select(&mut self, id: ConversationId, out: &mut Vec<Command>) {
        let switching = self.selected != Some(id);
        if switching {
            self.stop_typing(out);
        }
        self.selected = Some(id);
        if let Some(chat) = self.chat_mut(id) {
            if switching {
                chat.scroll = 0;
            }
            chat.unread = 0;
            if !chat.history_requested {
                chat.history_requested = true;
                chat.loading = true;
                if let Some(m) = chat.conv.last_message.take() {
                    chat.messages.insert(m.seq, m);
                }
                out.push(Command::LoadHistory {
                    conversation_id: id,
                    before: None,
                });
            }
        }
        self.mark_read_if_open(id, out);
    }

    /// Tells the conversation I stopped typing, if I had said I started.
    pub(crate) fn stop_typing(&mut self, out: &mut Vec<Command>) {
        if let Some((conv, _)) = self.typing_sent.take() {
            out.push(Command::Typing {
                conversation_id: conv,
                state: TypingState::Stop,
            });
        }
    }

    /// Notes a key that changed the input: `typing start`, throttled.
    pub(crate) fn typed(&mut self, out: &mut Vec<Command>) {
        self.last_key = self.now;
        let Some(conv) = self.selected else { return };
        if self.input.is_empty() || self.input.starts_with('/') {
            self.stop_typing(out);
            return;
        }
        let due = match self.typing_sent {
            Some((c, at)) => c != conv || self.now.saturating_duration_since(at) >= TYPING_RESEND,
            None => true,
        };
        if due {
            if let Some((c, _)) = self.typing_sent {
                if c != conv {
                    self.stop_typing(out);
                }
            }
            self.typing_sent = Some((conv, self.now));
            out.push(Command::Typing {
                conversation_id: conv,
                state: TypingState::Start,
            });
        }
    }

    /// Queues a text message in the open conversation.
    pub(crate) fn send_text(&mut self, text: String, out: &mut Vec<Command>) {
        let Some(id) = self.selected else {
            self.notice = Some("no conversation open: /dm USER starts one".to_owned());
            return;
        };
        if self.refuse_encrypted(id) {
            return;
        }
        self.stop_typing(out);
        let client_msg_id = confab_sdk::new_client_msg_id();
        let encrypted = self.is_encrypted(id);
        if let Some(chat) = self.chat_mut(id) {
            chat.scroll = 0;
            chat.pending.push(Pending {
                client_msg_id: client_msg_id.clone(),
                text: text.clone(),
                error: None,
            });
        }
        out.push(if encrypted {
            Command::SendEncrypted {
                conversation_id: id,
                client_msg_id,
                text,
            }
        } else {
            Command::SendText {
                conversation_id: id,
                client_msg_id,
                text,
            }
        });
    }

    /// Whether `id` is end-to-end encrypted.
    pub(crate) fn is_encrypted(&self, id: ConversationId) -> bool {
        self.chat(id).is_some_and(|c| c.conv.encrypted)
    }

    /// A device without a device key cannot encrypt: in an end-to-end
    /// encrypted conversation it says how to get one instead of sending
    /// plain text the server would refuse (`encryption_required`).
    fn refuse_encrypted(&mut self, id: ConversationId) -> bool {
        if self.e2ee || !self.is_encrypted(id) {
            return false;
        }
        self.notice = Some(
            "🔒 this conversation is end-to-end encrypted and this device has no encryption key: log in again with `confab login` to make one".to_owned(),
        );
        true
    }

    /// Scrolls the open conversation up (`up`) or down by `n` messages,
    /// fetching older history when the top is reached.
    pub(crate) fn scroll(&mut self, up: bool, n: usize, out: &mut Vec<Command>) {
        let Some(id) = self.selected else { return };
        let Some(chat) = self.chat_mut(id) else {
            return;
        };
        let len = chat.messages.len() + chat.pending.len();
        if up {
            chat.scroll = (chat.scroll + n).min(len.saturating_sub(1));
            let oldest = chat.messages.keys().next().copied();
            if let Some(oldest) = oldest.filter(|_| chat.has_older() && !chat.loading) {
                if chat.scroll + PAGE >= len {
                    chat.loading = true;
                    out.push(Command::LoadHistory {
                        conversation_id: id,
                        before: Some(oldest),
                    });
                }
            }
        } else {
            chat.scroll = chat.scroll.saturating_sub(n);
        }
    }

    /// Starts an upload of `path` into the open conversation.
    pub(crate) fn send_file(&mut self, path: std::path::PathBuf, out: &mut Vec<Command>) {
        let Some(id) = self.selected else {
            self.notice = Some("no conversation open".to_owned());
            return;
        };
        if self.refuse_encrypted(id) {
            return;
        }
        let upload_id = self.next_upload;
        self.next_upload += 1;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        self.uploads.push(Upload {
            id: upload_id,
            name,
            sent: 0,
            total: 0,
        });
        out.push(if self.is_encrypted(id) {
            Command::SendEncryptedFile {
                upload_id,
                conversation_id: id,
                path,
            }
        } else {
            Command::SendFile {
                upload_id,
                conversation_id: id,
                path,
            }
        });
    }
}

impl App {
    /// A left click: picks a conversation in the list, or focuses the input.
    pub(crate) fn click(&mut self, column: u16, row: u16, out: &mut Vec<Command>) {
        let at = Position::new(column, row);
        let (target, input) = {
            let c = self.clickable.borrow();
            let target = c
                .list
                .contains(at)
                .then(|| c.rows.get(usize::from(row - c.list.y)).copied().flatten())
                .flatten();
            (target, c.input.contains(at))
        };
        if let Some(id) = target {
            self.select(id, out);
        } else if input {
            self.focus = Focus::Input;
        }
    }
}
