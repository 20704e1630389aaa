//! `confab chat --p2p`: the same [`App`] on the peer-to-peer backend. The
//! runner owns a [`Node`] for the data dir (and serves its control socket,
//! so `confab p2p send`, `status`, … hand their work to it, and a second
//! `confab p2p listen` refuses to start), executes the app's [`Command`]s
//! with the node and its store, and turns node events into the app's
//! [`AppEvent`]s through the [`IdMap`] (contacts as users, P2P
//! conversations as conversations, local display order as seqs).
//!
//! Ticks: a message is "sent" (✓) once this device stored it, "delivered"
//! (✓✓) when a member acked it, "read" when a member's read receipt names
//! it. Without a server there are no friend requests, mutes or leaving a
//! group: those commands answer with a notice saying so.
//!
//! End-to-end encrypted conversations (`/dm NAME -e`, `/group … -e`) are
//! the node's MLS ones: the node opens each `encrypted` envelope as it
//! arrives, so the app gets plaintext lines (history from
//! `Store::shown_history`, live ones as node events) and never asks the
//! runner to decrypt; what cannot be opened (yet) is a locked line saying
//! why. Every send into an encrypted conversation goes through
//! `Node::send_encrypted` (the store decides, not the app's flag), and a
//! file there is offered with its details inside the MLS message.
//!
//! Like [`Runner`](super::Runner) it is generic over the ratatui backend
//! and reads terminal events from a channel, so tests drive it with a
//! `TestBackend` and scripted keys.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use confab_p2p::control;
use confab_p2p::envelope::kind;
use confab_p2p::node::{Event as NodeEvent, NodeConfig, NodeError};
use confab_p2p::store::{Contact, Receipt, Store, StoreError, StoredMessage};
use confab_p2p::{direct_conversation_id, Envelope, Node};
use confab_sdk::proto::api::Friend;
use confab_sdk::{Ack, ConversationId, Event, PresenceStatus, ReceiptKind, Seq, TypingState};
use ratatui::backend::Backend;
use ratatui::crossterm::event::Event as TermEvent;
use ratatui::Terminal;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::app::{App, HISTORY_PAGE};
use super::commands::{AppEvent, Command};
use super::p2p_e2ee;
use super::p2p_map::{self, ConversationState, IdMap};
use super::runner::RunnerOptions;

/// What can stop the P2P runner.
#[derive(Debug, thiserror::Error)]
pub enum P2pRunError {
    /// A `confab p2p listen` (or another `confab chat --p2p`) owns the data dir.
    #[error(
        "a `confab p2p listen` (or another `confab chat --p2p`) is running on {0}: stop it first (one peer per data dir), or keep using it with `confab p2p send` and `history`"
    )]
    AlreadyRunning(PathBuf),
    /// The node did not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Drawing failed (the terminal went away).
    #[error("drawing: {0}")]
    Draw(String),
}

/// Fails with [`P2pRunError::AlreadyRunning`] when a peer answers on the
/// data dir's control socket (checked again, race-free, when the runner
/// claims it; this is for saying so before the terminal is taken over).
pub async fn check_free(data_dir: &Path) -> Result<(), P2pRunError> {
    match tokio::net::UnixStream::connect(control::socket_path(data_dir)).await {
        Ok(_) => Err(P2pRunError::AlreadyRunning(data_dir.to_owned())),
        Err(_) => Ok(()),
    }
}

/// Results of the runner's tasks, in the store's vocabulary: the runner
/// maps them (it alone owns the [`IdMap`]).
enum Outcome {
    /// Already in the app's vocabulary.
    App(AppEvent),
    /// Every conversation.
    Conversations(Vec<ConversationState>),
    /// A conversation to show and select (after `/dm` or `/group`).
    Opened(ConversationState, u64),
    /// A conversation's whole history, for a page of it.
    History {
        conversation_id: ConversationId,
        before: Option<Seq>,
        history: Vec<StoredMessage>,
    },
    /// A user's contact entry (none: not a contact).
    User(String, Option<Contact>),
    /// Contacts, and whether each has a connection now.
    Friends(Vec<(Contact, bool)>),
    /// An envelope of mine composed by a command (a group change).
    Composed(Envelope),
    /// Lines of history as the store shows them (one of my encrypted
    /// envelopes sent through the control socket, opened).
    Lines(Vec<StoredMessage>),
    /// An encrypted message of mine, stored and queued: its envelope has
    /// an id of its own, shown where the app's `client_msg_id` is.
    SentEncrypted {
        client_msg_id: String,
        envelope_id: String,
        conversation_id: ConversationId,
        seq: Seq,
    },
    /// A file offered, or why not.
    Uploaded {
        upload_id: u64,
        result: Result<Envelope, String>,
    },
}

/// Work on the node that must keep its order (sends, typing, reads).
enum Op {
    Send {
        conversation: String,
        client_msg_id: String,
        text: String,
        /// Where the app shows it (given before it is stored, so an ack
        /// from the peer can never come before its seq).
        conversation_id: ConversationId,
        seq: Seq,
    },
    Typing(String),
    Read(String),
}

/// Most acks remembered for messages the runner has not numbered yet.
const EARLY_ACKS: usize = 256;

/// The app, its peer and its screen.
pub struct P2pRunner<B: Backend> {
    terminal: Terminal<B>,
    app: App,
    node: Node,
    map: IdMap,
    my_name: String,
    events: broadcast::Receiver<NodeEvent>,
    events_open: bool,
    ordered: mpsc::Sender<Op>,
    results_tx: mpsc::Sender<Outcome>,
    results: mpsc::Receiver<Outcome>,
    input: mpsc::Receiver<TermEvent>,
    input_open: bool,
    tick: tokio::time::Interval,
    bell: Box<dyn FnMut() + Send>,
    control: JoinHandle<()>,
    /// Acks (recipient, client_msg_id) that came before their message got
    /// a seq (a file offer's ack can beat the offer's answer).
    early_acks: VecDeque<(String, String)>,
}

impl<B: Backend> P2pRunner<B> {
    /// Starts the peer of `config.data_dir` (refusing when a listener runs
    /// there), serves its control socket, reads the conversations and
    /// starts the remaining fetches. Must be called inside a Tokio runtime.
    pub async fn new(
        config: NodeConfig,
        backend: B,
        input: mpsc::Receiver<TermEvent>,
        options: RunnerOptions,
    ) -> Result<P2pRunner<B>, P2pRunError> {
        // Claimed before the node starts: never two swarms with one key.
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::File(config.data_dir.display().to_string(), e))?;
        let socket = match control::claim(&config.data_dir).await {
            Ok(socket) => socket,
            Err(NodeError::Transport(_)) => {
                return Err(P2pRunError::AlreadyRunning(config.data_dir.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let terminal = Terminal::new(backend).map_err(|e| P2pRunError::Draw(e.to_string()))?;
        let node = Node::start(config).await?;
        let events = node.subscribe();
        let served = node.clone();
        let control = tokio::spawn(async move {
            if let Err(e) = control::serve_on(socket, served).await {
                tracing::warn!("p2p control socket: {e}");
            }
        });
        let read = node
            .store()
            .call(|s| Ok((s.meta("name")?.unwrap_or_default(), all_states(s)?)))
            .await;
        let (my_name, initial) = match read {
            Ok(read) => read,
            Err(e) => {
                control.abort();
                node.shutdown().await;
                return Err(e.into());
            }
        };
        let mut map = IdMap::new(&node.peer_id().to_base58());
        let me = p2p_map::user(&mut map, &node.peer_id().to_base58(), None, &my_name);
        let (results_tx, results) = mpsc::channel(1024);
        let (ordered, ordered_rx) = mpsc::channel(1024);
        tokio::spawn(run_ordered(node.clone(), ordered_rx, results_tx.clone()));
        let mut tick = tokio::time::interval(options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runner = P2pRunner {
            terminal,
            // The node is this device's MLS client: the app sends in
            // encrypted conversations instead of refusing.
            app: App::new(me).with_e2ee(true),
            node,
            map,
            my_name,
            events,
            events_open: true,
            ordered,
            results_tx,
            results,
            input,
            input_open: true,
            tick,
            bell: options.bell,
            control,
            early_acks: VecDeque::new(),
        };
        let mut first = runner.app.start();
        first.retain(|c| c != &Command::LoadConversations);
        // The node is up and the store read: nothing to catch up on first.
        first.extend(runner.app.on_event(AppEvent::Sdk(Event::SyncComplete)));
        for event in runner.on_outcome(Outcome::Conversations(initial)) {
            first.extend(runner.app.on_event(event));
        }
        for cmd in first {
            runner.execute(cmd);
        }
        Ok(runner)
    }

    /// The app's state.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The terminal (tests read the `TestBackend`'s buffer from it).
    pub fn terminal(&self) -> &Terminal<B> {
        &self.terminal
    }

    /// The peer.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The P2P conversation id behind one of the app's conversation ids.
    pub fn p2p_conversation(&self, id: ConversationId) -> Option<String> {
        self.map.p2p_conversation(id).map(str::to_owned)
    }

    /// Runs until the app quits or the input ends, then stops the peer.
    pub async fn run(mut self) -> Result<(), P2pRunError> {
        self.draw()?;
        while self.step().await? {}
        self.control.abort();
        self.node.shutdown().await;
        let _ = std::fs::remove_file(control::socket_path(self.node.data_dir()));
        Ok(())
    }

    /// Handles the next thing that happens and redraws; false once the app
    /// wants to quit (or its input ended).
    pub async fn step(&mut self) -> Result<bool, P2pRunError> {
        if self.app.should_quit() || !self.input_open {
            return Ok(false);
        }
        let events = tokio::select! {
            ev = self.input.recv(), if self.input_open => {
                let commands = match ev {
                    Some(ev) => self.app.on_terminal(ev),
                    None => {
                        self.input_open = false;
                        Vec::new()
                    }
                };
                for cmd in commands {
                    self.execute(cmd);
                }
                Vec::new()
            }
            ev = self.events.recv(), if self.events_open => match ev {
                Ok(ev) => self.on_node_event(ev),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed events: read the list (ticks, unread counts)
                    // and the open chat's newest page again.
                    self.execute(Command::LoadConversations);
                    if let Some(id) = self.app.selected().map(|c| c.id()) {
                        self.execute(Command::LoadHistory {
                            conversation_id: id,
                            before: None,
                        });
                    }
                    Vec::new()
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.events_open = false;
                    vec![AppEvent::Notice("the p2p node stopped: restart `confab chat --p2p`".into())]
                }
            },
            Some(outcome) = self.results.recv() => self.on_outcome(outcome),
            _ = self.tick.tick() => vec![AppEvent::Tick(Instant::now())],
        };
        for event in events {
            for cmd in self.app.on_event(event) {
                self.execute(cmd);
            }
        }
        self.draw()?;
        Ok(!self.app.should_quit() && self.input_open)
    }

    /// Draws the app now.
    pub fn draw(&mut self) -> Result<(), P2pRunError> {
        let app = &self.app;
        self.terminal
            .draw(|f| app.render(f))
            .map(drop)
            .map_err(|e| P2pRunError::Draw(e.to_string()))
    }

    /// What a node event means to the app.
    fn on_node_event(&mut self, event: NodeEvent) -> Vec<AppEvent> {
        match event {
            NodeEvent::Message { message } if message.kind == kind::RECEIPT => {
                self.read_receipt(&message).into_iter().collect()
            }
            NodeEvent::Message { message } => p2p_map::record(&mut self.map, &message)
                .map(|m| AppEvent::Sdk(Event::Message(m)))
                .into_iter()
                .collect(),
            NodeEvent::Typing {
                peer,
                conversation_id,
            } => vec![AppEvent::Sdk(Event::Typing {
                conversation_id: self.map.conversation(&conversation_id),
                user_id: self.map.user(&peer),
                state: TypingState::Start,
            })],
            NodeEvent::Delivered {
                to, client_msg_id, ..
            } => match self.delivered(&to, &client_msg_id) {
                Some(e) => vec![e],
                None => {
                    if self.early_acks.len() == EARLY_ACKS {
                        self.early_acks.pop_front();
                    }
                    self.early_acks.push_back((to, client_msg_id));
                    Vec::new()
                }
            },
            NodeEvent::Connected { peer, .. } => self.presence(&peer, PresenceStatus::Online),
            NodeEvent::Disconnected { peer } => self.presence(&peer, PresenceStatus::Offline),
            NodeEvent::Refused { from, message, .. } => vec![AppEvent::Notice(format!(
                "refused an envelope from {}: {message}",
                p2p_map::short_peer(&from)
            ))],
            NodeEvent::FileReceived { path, .. } => {
                vec![AppEvent::Notice(format!("file received: {path}"))]
            }
            // Sent by another program through this app's control socket:
            // shown as if typed here.
            NodeEvent::Sent { envelope } if envelope.kind == kind::ENCRYPTED => {
                // Its plaintext is in the store (a Welcome or commit has
                // none and is no line).
                let node = self.node.clone();
                self.spawn(async move {
                    let read = node
                        .store()
                        .call(move |s| {
                            Ok(s.shown_one(&envelope)?
                                .map(p2p_map::shown_message)
                                .into_iter()
                                .collect())
                        })
                        .await;
                    match read {
                        Ok(lines) => Outcome::Lines(lines),
                        Err(e) => notice(format!("reading history: {e}")),
                    }
                });
                Vec::new()
            }
            NodeEvent::Sent { envelope } => {
                let message = p2p_map::own_message(&envelope, now_ms());
                self.on_node_event(NodeEvent::Message { message })
            }
            NodeEvent::FileProgress {
                peer,
                direction,
                bytes,
                size,
                ..
            } => {
                let user = self.map.user(&peer);
                let who = self.app.name(user);
                let percent = bytes.saturating_mul(100).checked_div(size).unwrap_or(100);
                let (b, t) = (super::format::size(bytes), super::format::size(size));
                vec![AppEvent::Notice(if direction == "in" {
                    format!("receiving a file from {who}: {percent}% ({b} of {t})")
                } else {
                    format!("{who} is fetching your file: {percent}% ({b} of {t})")
                })]
            }
            _ => Vec::new(),
        }
    }

    /// A member's read receipt: the newest of my messages it names.
    fn read_receipt(&mut self, message: &StoredMessage) -> Option<AppEvent> {
        let receipt: Receipt = serde_json::from_str(&message.body).ok()?;
        if receipt.state != "read" {
            return None;
        }
        let me = self.map.me_peer().to_owned();
        let (conversation_id, seq) = receipt
            .of
            .iter()
            .filter_map(|id| self.map.find(&me, id))
            .max_by_key(|(_, seq)| *seq)?;
        Some(AppEvent::Sdk(Event::Receipt {
            conversation_id,
            user_id: self.map.user(&message.sender),
            kind: ReceiptKind::Read,
            seq,
        }))
    }

    /// A member acked one of my messages.
    fn delivered(&mut self, to: &str, client_msg_id: &str) -> Option<AppEvent> {
        let me = self.map.me_peer().to_owned();
        let (conversation_id, seq) = self.map.find(&me, client_msg_id)?;
        Some(AppEvent::Sdk(Event::Receipt {
            conversation_id,
            user_id: self.map.user(to),
            kind: ReceiptKind::Delivered,
            seq,
        }))
    }

    /// Acks that came before this message of mine got its seq.
    fn early_acks_of(&mut self, client_msg_id: &str) -> Vec<AppEvent> {
        let (early, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.early_acks)
            .into_iter()
            .partition(|(_, id)| id == client_msg_id);
        self.early_acks = rest;
        early
            .into_iter()
            .filter_map(|(to, id)| self.delivered(&to, &id))
            .collect()
    }

    fn presence(&self, peer: &str, status: PresenceStatus) -> Vec<AppEvent> {
        // Only contacts (they have a user id by now): not relays.
        self.map
            .known_user(peer)
            .filter(|&u| u != p2p_map::ME)
            .map(|user_id| {
                AppEvent::Sdk(Event::Presence {
                    user_id,
                    status,
                    last_seen: None,
                })
            })
            .into_iter()
            .collect()
    }

    /// A task's result in the app's vocabulary.
    fn on_outcome(&mut self, outcome: Outcome) -> Vec<AppEvent> {
        match outcome {
            Outcome::App(event) => vec![event],
            Outcome::Conversations(states) => {
                let list = states
                    .iter()
                    .map(|s| p2p_map::conversation(&mut self.map, s))
                    .collect();
                let mut out = vec![AppEvent::Conversations(list)];
                out.extend(states.iter().filter_map(|s| self.delivered_on_start(s)));
                out
            }
            Outcome::Opened(state, ticket) => {
                let conv = p2p_map::conversation(&mut self.map, &state);
                let mut out = vec![AppEvent::Opened(conv, ticket)];
                out.extend(self.delivered_on_start(&state));
                out
            }
            Outcome::History {
                conversation_id,
                before,
                history,
            } => {
                let page = p2p_map::history_page(
                    &mut self.map,
                    &history,
                    before,
                    usize::try_from(HISTORY_PAGE).unwrap_or(50),
                );
                vec![AppEvent::History {
                    conversation_id,
                    page,
                }]
            }
            Outcome::User(peer, contact) => vec![AppEvent::User(p2p_map::user(
                &mut self.map,
                &peer,
                contact.as_ref(),
                &self.my_name,
            ))],
            Outcome::Friends(contacts) => {
                let friends = contacts
                    .into_iter()
                    .map(|(c, online)| Friend {
                        user: p2p_map::user(&mut self.map, &c.peer_id, Some(&c), &self.my_name),
                        since: 0,
                        status: if online {
                            PresenceStatus::Online
                        } else {
                            PresenceStatus::Offline
                        },
                        last_seen: None,
                    })
                    .collect();
                vec![AppEvent::Friends(friends)]
            }
            Outcome::Composed(env) => {
                let message = p2p_map::own_message(&env, now_ms());
                let mut out: Vec<AppEvent> = p2p_map::record(&mut self.map, &message)
                    .map(|m| AppEvent::Sdk(Event::Message(m)))
                    .into_iter()
                    .collect();
                out.extend(self.early_acks_of(&env.client_msg_id));
                out
            }
            Outcome::Lines(lines) => lines
                .iter()
                .filter_map(|m| p2p_map::record(&mut self.map, m))
                .map(|m| AppEvent::Sdk(Event::Message(m)))
                .collect(),
            Outcome::SentEncrypted {
                client_msg_id,
                envelope_id,
                conversation_id,
                seq,
            } => {
                let me = self.map.me_peer().to_owned();
                // A history read may have shown the envelope already (under
                // its own id, with a seq of its own): the ack names that one.
                let (conversation_id, seq) = match self.map.find(&me, &envelope_id) {
                    Some(at) => at,
                    None => {
                        self.map.alias(&me, &envelope_id, (conversation_id, seq));
                        (conversation_id, seq)
                    }
                };
                let mut out = vec![AppEvent::Acked {
                    client_msg_id: client_msg_id.clone(),
                    result: Ok(Ack {
                        client_msg_id,
                        conversation_id,
                        seq,
                        ts: now_ms(),
                    }),
                }];
                out.extend(self.early_acks_of(&envelope_id));
                out
            }
            Outcome::Uploaded { upload_id, result } => {
                let result = result.and_then(|env| {
                    let message = p2p_map::own_message(&env, now_ms());
                    p2p_map::record(&mut self.map, &message)
                        .ok_or_else(|| "the file offer is not a message".to_owned())
                });
                let id = result.as_ref().ok().map(|m| m.client_msg_id.clone());
                let mut out = vec![AppEvent::UploadDone { upload_id, result }];
                if let Some(id) = id {
                    out.extend(self.early_acks_of(&id));
                }
                out
            }
        }
    }

    /// A "delivered" receipt for what members acked before the app started.
    fn delivered_on_start(&mut self, state: &ConversationState) -> Option<AppEvent> {
        let seq = p2p_map::delivered_seq(&self.map, state);
        let me = self.map.me_peer().to_owned();
        let other = state.conversation.members.iter().find(|m| **m != me)?;
        (seq > 0).then(|| {
            AppEvent::Sdk(Event::Receipt {
                conversation_id: self.map.conversation(&state.conversation.id),
                user_id: self.map.user(other),
                kind: ReceiptKind::Delivered,
                seq,
            })
        })
    }

    /// Starts a task that answers with one outcome.
    fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(work.await).await;
        });
    }

    fn notice(&self, text: impl Into<String>) {
        let _ = self
            .results_tx
            .try_send(Outcome::App(AppEvent::Notice(text.into())));
    }

    fn ordered_op(&self, op: Op) {
        if self.ordered.try_send(op).is_err() {
            self.notice("too much queued: try again");
        }
    }

    fn execute(&mut self, cmd: Command) {
        let node = self.node.clone();
        match cmd {
            Command::Bell => (self.bell)(),
            Command::Quit => {}
            Command::LoadConversations => self.spawn(async move {
                match node.store().call(all_states).await {
                    Ok(states) => Outcome::Conversations(states),
                    Err(e) => notice(format!("reading conversations: {e}")),
                }
            }),
            Command::LoadHistory {
                conversation_id,
                before,
            } => {
                let Some(conv) = self.p2p_id(conversation_id) else {
                    return;
                };
                self.spawn(async move {
                    match node.store().call(move |s| p2p_e2ee::lines(s, &conv)).await {
                        Ok(history) => Outcome::History {
                            conversation_id,
                            before,
                            history,
                        },
                        Err(e) => notice(format!("reading history: {e}")),
                    }
                });
            }
            // Nobody edits or reacts to P2P messages.
            Command::RefreshMessage { .. } => {}
            Command::LoadUser(user) => {
                let Some(peer) = self.map.peer(user).map(str::to_owned) else {
                    return;
                };
                self.spawn(async move {
                    let who = peer.clone();
                    let contact = node.store().call(move |s| s.find_contact(&who)).await.ok();
                    Outcome::User(peer, contact)
                });
            }
            Command::LoadFriends => self.spawn(async move {
                let contacts = match node.store().call(|s| s.contacts()).await {
                    Ok(c) => c,
                    Err(e) => return notice(format!("reading contacts: {e}")),
                };
                let status = node.status().await.ok();
                let online = |peer: &str| {
                    status.as_ref().is_some_and(|s| {
                        s.contacts
                            .iter()
                            .any(|c| c.peer_id == peer && c.path != "offline")
                    })
                };
                Outcome::Friends(
                    contacts
                        .into_iter()
                        .map(|c| {
                            let on = online(&c.peer_id);
                            (c, on)
                        })
                        .collect(),
                )
            }),
            Command::LoadFriendRequests => {
                let _ = self
                    .results_tx
                    .try_send(Outcome::App(AppEvent::FriendRequests(Vec::new())));
            }
            // One path for both: the store says whether the conversation is
            // encrypted (never plaintext into an encrypted one).
            Command::SendText {
                conversation_id,
                client_msg_id,
                text,
            }
            | Command::SendEncrypted {
                conversation_id,
                client_msg_id,
                text,
            } => {
                let Some(conversation) = self.p2p_id(conversation_id) else {
                    return;
                };
                let me = self.map.me_peer().to_owned();
                let (_, seq) = self.map.seq(&conversation, &me, &client_msg_id);
                self.ordered_op(Op::Send {
                    conversation,
                    client_msg_id,
                    text,
                    conversation_id,
                    seq,
                });
            }
            Command::Typing {
                conversation_id,
                state: TypingState::Start,
            } => {
                if let Some(conv) = self.p2p_id(conversation_id) {
                    self.ordered_op(Op::Typing(conv));
                }
            }
            // P2P typing has no stop: the others forget it after a while.
            Command::Typing { .. } => {}
            Command::MarkRead {
                conversation_id, ..
            } => {
                if let Some(conv) = self.p2p_id(conversation_id) {
                    self.ordered_op(Op::Read(conv));
                }
            }
            Command::OpenDirect {
                username,
                encrypted: true,
                ticket,
            } => self.spawn(async move {
                let made = p2p_e2ee::with_keys(|| node.encrypted_conversation(&username)).await;
                let id = match made {
                    Ok(id) => id,
                    Err(e) => return notice(p2p_e2ee::keys_notice(&e.to_string(), &username)),
                };
                match node.store().call(move |s| state(s, &id)).await {
                    Ok(state) => Outcome::Opened(state, ticket),
                    Err(e) => notice(e.to_string()),
                }
            }),
            Command::CreateGroup {
                title,
                usernames,
                encrypted: true,
                ticket,
            } => self.spawn(async move {
                let made =
                    p2p_e2ee::with_keys(|| node.create_encrypted_group(&title, usernames.clone()))
                        .await;
                let id = match made {
                    Ok(id) => id,
                    Err(e) => {
                        let who = format!("each member ({})", usernames.join(", "));
                        return notice(p2p_e2ee::keys_notice(
                            &format!("creating the encrypted group: {e}"),
                            &who,
                        ));
                    }
                };
                match node.store().call(move |s| state(s, &id)).await {
                    Ok(state) => Outcome::Opened(state, ticket),
                    Err(e) => notice(e.to_string()),
                }
            }),
            Command::OpenDirect {
                username, ticket, ..
            } => self.spawn(async move {
                let opened = node
                    .store()
                    .call(move |s| {
                        let c = s.find_contact(&username)?;
                        let id = direct_conversation_id(s.me(), &c.peer_id);
                        state(s, &id)
                    })
                    .await;
                match opened {
                    Ok(state) => Outcome::Opened(state, ticket),
                    Err(e) => notice(e.to_string()),
                }
            }),
            Command::CreateGroup {
                title,
                usernames,
                ticket,
                ..
            } => self.spawn(async move {
                let id = match node.create_group(&title, usernames).await {
                    Ok(id) => id,
                    Err(e) => return notice(format!("creating the group: {e}")),
                };
                match node.store().call(move |s| state(s, &id)).await {
                    Ok(state) => Outcome::Opened(state, ticket),
                    Err(e) => notice(e.to_string()),
                }
            }),
            Command::AddMember {
                conversation_id,
                username,
                ..
            } => self.change_group(conversation_id, username, true),
            Command::RemoveMember {
                conversation_id,
                username,
                ..
            } => self.change_group(conversation_id, username, false),
            // The node opened every encrypted envelope as it came: the
            // app's lines already hold what this device could read.
            Command::Decrypt { .. } => {}
            Command::SendEncryptedFile {
                upload_id,
                conversation_id,
                path,
            } => self.send_file(upload_id, conversation_id, path),
            Command::Leave(_) => {
                self.notice("P2P groups have no leaving: the group's admin removes members (/kick)")
            }
            Command::SetMuted { .. } => self.notice("muting is not available in P2P mode"),
            Command::SendFriendRequest { .. }
            | Command::AcceptFriendRequest(_)
            | Command::DeclineFriendRequest(_) => self
                .notice("no friend requests in P2P mode: add contacts with `confab p2p add LINK`"),
            Command::SendFile {
                upload_id,
                conversation_id,
                path,
            } => self.send_file(upload_id, conversation_id, path),
        }
    }

    fn p2p_id(&self, id: ConversationId) -> Option<String> {
        let found = self.map.p2p_conversation(id).map(str::to_owned);
        if found.is_none() {
            self.notice(format!("no P2P conversation #{id}"));
        }
        found
    }

    fn change_group(&self, conversation_id: ConversationId, username: String, add: bool) {
        let Some(conv) = self.p2p_id(conversation_id) else {
            return;
        };
        let node = self.node.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let (plus, minus) = if add {
                (vec![username.clone()], Vec::new())
            } else {
                (Vec::new(), vec![username.clone()])
            };
            let changed =
                p2p_e2ee::with_keys(|| node.change_group(&conv, plus.clone(), minus.clone())).await;
            let outcomes = match changed {
                Ok(env) => {
                    let done = if add { "added" } else { "removed" };
                    let states = node.store().call(all_states).await;
                    let mut out = vec![
                        Outcome::Composed(env),
                        Outcome::App(AppEvent::Notice(format!("{done} {username}"))),
                    ];
                    out.extend(states.ok().map(Outcome::Conversations));
                    out
                }
                Err(e) => vec![notice(p2p_e2ee::keys_notice(&e.to_string(), &username))],
            };
            for o in outcomes {
                let _ = tx.send(o).await;
            }
        });
    }

    /// Offers a file in a conversation (direct or group): hashed and
    /// announced with a `file` envelope; the members pull the bytes (the
    /// bar here is the offer; the pulls show as `file_progress` notices).
    fn send_file(&self, upload_id: u64, conversation_id: ConversationId, path: PathBuf) {
        let Some(conv) = self.p2p_id(conversation_id) else {
            return;
        };
        let node = self.node.clone();
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let id = conv.clone();
            // The store decides, not the app's flag: never a plain offer
            // in an encrypted conversation.
            let encrypted = node.store().call(move |s| s.is_encrypted(&id)).await;
            let result = async {
                let encrypted = encrypted.map_err(|e| e.to_string())?;
                let total = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .len();
                let progress = |sent| {
                    Outcome::App(AppEvent::UploadProgress {
                        upload_id,
                        sent,
                        total,
                    })
                };
                let _ = tx.send(progress(0)).await;
                let env = if encrypted {
                    node.send_encrypted_file(&conv, &path).await
                } else {
                    node.send_file_to_conversation(&conv, &path).await
                }
                .map_err(|e| e.to_string())?;
                let _ = tx.send(progress(total)).await;
                Ok(env)
            }
            .await;
            let _ = tx.send(Outcome::Uploaded { upload_id, result }).await;
        });
    }
}

impl<B: Backend> Drop for P2pRunner<B> {
    fn drop(&mut self) {
        // The control socket's task holds a handle to the node: without
        // it the node stops once the last handle is gone.
        self.control.abort();
    }
}

fn notice(text: String) -> Outcome {
    Outcome::App(AppEvent::Notice(text))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the app needs of one conversation.
fn state(s: &mut Store, id: &str) -> Result<ConversationState, StoreError> {
    let conversation = s
        .conversation(id)?
        .ok_or_else(|| StoreError::NotFound(format!("no conversation {id}")))?;
    let mut undelivered = std::collections::BTreeSet::new();
    for m in conversation.members.iter().filter(|m| *m != s.me()) {
        undelivered.extend(s.pending_ids(m)?);
    }
    Ok(ConversationState {
        encrypted: s.is_encrypted(id)?,
        history: p2p_e2ee::lines(s, id)?,
        read_by: s.read_by(id)?,
        conversation,
        undelivered,
    })
}

/// Every conversation this device is in.
fn all_states(s: &mut Store) -> Result<Vec<ConversationState>, StoreError> {
    let me = s.me().to_owned();
    let ids: Vec<String> = s
        .conversations()?
        .into_iter()
        .filter(|c| c.members.contains(&me))
        .map(|c| c.id)
        .collect();
    let mut out = Vec::new();
    for id in &ids {
        let state = state(s, id)?;
        // An encrypted chat that never got its keys (`/dm NAME -e` while
        // NAME was offline) and holds nothing: not listed.
        if state.encrypted && state.history.is_empty() && !s.has_mls_group(id) {
            continue;
        }
        out.push(state);
    }
    Ok(out)
}

/// Performs the node operations one by one, in order, so messages are
/// composed in the order they were typed.
async fn run_ordered(node: Node, mut ops: mpsc::Receiver<Op>, tx: mpsc::Sender<Outcome>) {
    while let Some(op) = ops.recv().await {
        match op {
            Op::Send {
                conversation,
                client_msg_id,
                text,
                conversation_id,
                seq,
            } => {
                let body = json!({ "text": text }).to_string();
                let conv = conversation.clone();
                let encrypted = node.store().call(move |s| s.is_encrypted(&conv)).await;
                match encrypted {
                    Ok(false) => {}
                    Ok(true) => {
                        let outcome =
                            match node.send_encrypted(&conversation, kind::TEXT, body).await {
                                Ok(env) => Outcome::SentEncrypted {
                                    client_msg_id,
                                    envelope_id: env.client_msg_id,
                                    conversation_id,
                                    seq,
                                },
                                Err(e) => Outcome::App(AppEvent::Acked {
                                    client_msg_id,
                                    result: Err(format!("🔒 not sent: {e}")),
                                }),
                            };
                        let _ = tx.send(outcome).await;
                        continue;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Outcome::App(AppEvent::Acked {
                                client_msg_id,
                                result: Err(e.to_string()),
                            }))
                            .await;
                        continue;
                    }
                }
                let result = node
                    .send_to_conversation_with_id(
                        &conversation,
                        kind::TEXT,
                        body,
                        Some(client_msg_id.clone()),
                    )
                    .await
                    .map(|_| Ack {
                        client_msg_id: client_msg_id.clone(),
                        conversation_id,
                        seq,
                        ts: now_ms(),
                    })
                    .map_err(|e| e.to_string());
                let _ = tx
                    .send(Outcome::App(AppEvent::Acked {
                        client_msg_id,
                        result,
                    }))
                    .await;
            }
            Op::Typing(conv) => {
                let _ = node.typing(&conv).await;
            }
            Op::Read(conv) => {
                let _ = node.mark_read(&conv).await;
            }
        }
    }
}
