//! Runs the app: reads terminal events, SDK events and command results,
//! feeds them to the [`App`], executes the [`Command`]s it returns with the
//! SDK (spawned tasks that answer over a channel) and redraws. Generic over
//! the ratatui backend and fed terminal events through a channel, so tests
//! drive the real thing with a `TestBackend` and scripted keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_sdk::{
    Attachment, Client, ConnectOptions, Connection, ConnectionHandle, ConversationId, E2ee,
    MessageKind, MessageRecord, Seq, TypingState, User,
};
use ratatui::backend::Backend;
use ratatui::crossterm::event::Event as TermEvent;
use ratatui::Terminal;
use serde_json::json;
use tokio::sync::mpsc;

use super::app::App;
use super::commands::{AppEvent, Command};
use super::requests::{http_command, send_file};

/// What can stop the runner.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The client has no session.
    #[error("not logged in: run `confab register` and `confab login` first")]
    NotLoggedIn,
    /// The SDK refused to open the connection.
    #[error("connecting: {0}")]
    Connect(#[from] confab_sdk::Error),
    /// Drawing failed (the terminal went away).
    #[error("drawing: {0}")]
    Draw(String),
}

/// How the runner behaves.
pub struct RunnerOptions {
    /// How often the app sees a [`AppEvent::Tick`] (typing timeouts).
    pub tick: Duration,
    /// Rings the bell; the real terminal writes `\x07`.
    pub bell: Box<dyn FnMut() + Send>,
    /// Connection options (tests shorten the backoff).
    pub connect: ConnectOptions,
    /// This device's end-to-end encryption, when it has a device key:
    /// encrypted conversations are then decrypted and written to; without
    /// it they show placeholders.
    pub e2ee: Option<Arc<E2ee>>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            tick: Duration::from_millis(250),
            bell: Box::new(|| {}),
            connect: ConnectOptions::default(),
            e2ee: None,
        }
    }
}

/// Work for the connection that must keep its order (sends, typing, reads).
enum ConnOp {
    Send {
        conversation_id: ConversationId,
        client_msg_id: String,
        text: String,
    },
    Typing(ConversationId, TypingState),
    Read(ConversationId, Seq),
}

/// Work for the device's MLS state, in order: its sends must keep the
/// order they were typed in, and every read goes through it in seq order.
enum E2eeOp {
    Send {
        conversation_id: ConversationId,
        client_msg_id: String,
        text: String,
    },
    Decrypt(ConversationId, Seq),
}

/// The app, its connection and its screen.
pub struct Runner<B: Backend> {
    terminal: Terminal<B>,
    app: App,
    client: Client,
    conn: Connection,
    conn_open: bool,
    ordered: mpsc::Sender<ConnOp>,
    e2ee: Option<(Arc<E2ee>, mpsc::UnboundedSender<E2eeOp>)>,
    results_tx: mpsc::Sender<AppEvent>,
    results: mpsc::Receiver<AppEvent>,
    input: mpsc::Receiver<TermEvent>,
    input_open: bool,
    tick: tokio::time::Interval,
    bell: Box<dyn FnMut() + Send>,
}

impl<B: Backend> Runner<B> {
    /// Fetches my conversations, connects with the client's session
    /// (syncing only what is newer than that list, not every conversation's
    /// whole history) and starts the remaining fetches. Must be called
    /// inside a Tokio runtime.
    pub async fn new(
        client: Client,
        backend: B,
        input: mpsc::Receiver<TermEvent>,
        options: RunnerOptions,
    ) -> Result<Runner<B>, RunError> {
        let me: User = client.session().ok_or(RunError::NotLoggedIn)?.user;
        let terminal = Terminal::new(backend).map_err(|e| RunError::Draw(e.to_string()))?;
        // Unreachable now: start anyway, the connection keeps trying and the
        // list is fetched again after it syncs.
        let initial = client.conversations().await.ok();
        let mut connect = options.connect;
        for conv in initial.iter().flatten() {
            connect.cursors.entry(conv.id).or_insert(conv.last_seq);
        }
        let conn = client.connect(connect)?;
        let (results_tx, results) = mpsc::channel(1024);
        let (ordered, ordered_rx) = mpsc::channel(1024);
        tokio::spawn(run_ordered(conn.handle(), ordered_rx, results_tx.clone()));
        let e2ee = options.e2ee.map(|e2ee| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_e2ee(e2ee.clone(), rx, results_tx.clone()));
            (e2ee, tx)
        });
        let mut tick = tokio::time::interval(options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runner = Runner {
            terminal,
            app: App::new(me).with_e2ee(e2ee.is_some()),
            client,
            conn,
            conn_open: true,
            ordered,
            e2ee,
            results_tx,
            results,
            input,
            input_open: true,
            tick,
            bell: options.bell,
        };
        let mut first = runner.app.start();
        if let Some(list) = initial {
            first.retain(|c| c != &Command::LoadConversations);
            first.extend(runner.app.on_event(AppEvent::Conversations(list)));
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

    /// The connection, to send from outside (tests kill its transport).
    pub fn connection(&self) -> &ConnectionHandle {
        &self.conn
    }

    /// Runs until the app quits or the input ends, then closes the connection.
    pub async fn run(mut self) -> Result<(), RunError> {
        self.draw()?;
        while self.step().await? {}
        // Closing waits for the socket's close handshake; do not hang on a
        // dead network.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.close()).await;
        Ok(())
    }

    /// Handles the next thing that happens and redraws; false once the app
    /// wants to quit (or its input ended).
    pub async fn step(&mut self) -> Result<bool, RunError> {
        if self.app.should_quit() || !self.input_open {
            return Ok(false);
        }
        let commands = tokio::select! {
            ev = self.input.recv(), if self.input_open => match ev {
                Some(ev) => self.app.on_terminal(ev),
                None => {
                    self.input_open = false;
                    Vec::new()
                }
            },
            ev = self.conn.next_event(), if self.conn_open => match ev {
                Some(ev) => self.app.on_event(AppEvent::Sdk(ev)),
                None => {
                    self.conn_open = false;
                    self.app.on_event(AppEvent::Notice(
                        "connection closed (logged out?): restart after `confab login`".into(),
                    ))
                }
            },
            Some(ev) = self.results.recv() => self.app.on_event(ev),
            _ = self.tick.tick() => self.app.on_event(AppEvent::Tick(Instant::now())),
        };
        for cmd in commands {
            self.execute(cmd);
        }
        self.draw()?;
        Ok(!self.app.should_quit() && self.input_open)
    }

    /// Draws the app now.
    pub fn draw(&mut self) -> Result<(), RunError> {
        let app = &self.app;
        self.terminal
            .draw(|f| app.render(f))
            .map(drop)
            .map_err(|e| RunError::Draw(e.to_string()))
    }

    fn execute(&mut self, cmd: Command) {
        let client = self.client.clone();
        let tx = self.results_tx.clone();
        match cmd {
            Command::Bell => (self.bell)(),
            Command::Quit => {}
            Command::SendText {
                conversation_id,
                client_msg_id,
                text,
            } => self.ordered_op(ConnOp::Send {
                conversation_id,
                client_msg_id,
                text,
            }),
            Command::Typing {
                conversation_id,
                state,
            } => self.ordered_op(ConnOp::Typing(conversation_id, state)),
            Command::MarkRead {
                conversation_id,
                seq,
            } => self.ordered_op(ConnOp::Read(conversation_id, seq)),
            Command::SendFile {
                upload_id,
                conversation_id,
                path,
            } => {
                let handle = self.conn.handle();
                let me = self.app.me().id;
                tokio::spawn(async move {
                    let result = send_file(&client, &handle, me, conversation_id, path, {
                        let tx = tx.clone();
                        move |sent, total| {
                            let _ = tx.try_send(AppEvent::UploadProgress {
                                upload_id,
                                sent,
                                total,
                            });
                        }
                    })
                    .await;
                    let _ = tx.send(AppEvent::UploadDone { upload_id, result }).await;
                });
            }
            Command::SendEncrypted {
                conversation_id,
                client_msg_id,
                text,
            } => self.e2ee_op(
                E2eeOp::Send {
                    conversation_id,
                    client_msg_id,
                    text,
                },
                "cannot send: this device has no encryption key",
            ),
            Command::Decrypt {
                conversation_id,
                from,
            } => self.e2ee_op(
                E2eeOp::Decrypt(conversation_id, from),
                "cannot decrypt: this device has no encryption key",
            ),
            Command::SendEncryptedFile {
                upload_id,
                conversation_id,
                path,
            } => {
                let Some((e2ee, _)) = &self.e2ee else {
                    let _ = tx.try_send(AppEvent::UploadDone {
                        upload_id,
                        result: Err("this device has no encryption key".into()),
                    });
                    return;
                };
                let e2ee = e2ee.clone();
                tokio::spawn(async move {
                    let result =
                        send_encrypted_file(&e2ee, conversation_id, path, |sent, total| {
                            let _ = tx.try_send(AppEvent::UploadProgress {
                                upload_id,
                                sent,
                                total,
                            });
                        })
                        .await;
                    let _ = tx.send(AppEvent::UploadDone { upload_id, result }).await;
                });
            }
            other => {
                let e2ee = self.e2ee.as_ref().map(|(e, _)| e.clone());
                tokio::spawn(async move {
                    for event in http_command(&client, e2ee.as_deref(), other).await {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }

    fn e2ee_op(&self, op: E2eeOp, without: &str) {
        let sent = match &self.e2ee {
            Some((_, ops)) => ops.send(op).is_ok(),
            None => false,
        };
        if !sent {
            let _ = self
                .results_tx
                .try_send(AppEvent::Notice(without.to_owned()));
        }
    }

    fn ordered_op(&self, op: ConnOp) {
        if self.ordered.try_send(op).is_err() {
            let _ = self
                .results_tx
                .try_send(AppEvent::Notice("too much queued: try again".into()));
        }
    }
}

/// Performs the connection operations one by one, in order; sends wait
/// for their acks in their own tasks.
async fn run_ordered(
    handle: ConnectionHandle,
    mut ops: mpsc::Receiver<ConnOp>,
    tx: mpsc::Sender<AppEvent>,
) {
    while let Some(op) = ops.recv().await {
        match op {
            ConnOp::Send {
                conversation_id,
                client_msg_id,
                text,
            } => {
                let queued = handle
                    .send_nowait_with_id(
                        &client_msg_id,
                        conversation_id,
                        MessageKind::Text,
                        json!({ "text": text }),
                    )
                    .await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = match queued {
                        Ok(pending) => pending.await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx
                        .send(AppEvent::Acked {
                            client_msg_id,
                            result,
                        })
                        .await;
                });
            }
            ConnOp::Typing(conv, state) => {
                let _ = handle.typing(conv, state).await;
            }
            ConnOp::Read(conv, seq) => {
                let _ = handle.read(conv, seq).await;
            }
        }
    }
}

/// Runs the device's MLS work one operation at a time: sends in the order
/// typed (each answered with [`AppEvent::Acked`]), and reads, which catch
/// the conversation up in seq order and answer what this device made of
/// every message from the first seq asked for ([`AppEvent::Decrypted`]).
/// Reads queued meanwhile are merged: one catch-up per conversation.
async fn run_e2ee(
    e2ee: Arc<E2ee>,
    mut ops: mpsc::UnboundedReceiver<E2eeOp>,
    tx: mpsc::Sender<AppEvent>,
) {
    while let Some(op) = ops.recv().await {
        let mut reads: BTreeMap<ConversationId, Seq> = BTreeMap::new();
        let mut next = Some(op);
        while let Some(op) = next.take() {
            match op {
                E2eeOp::Decrypt(id, from) => {
                    let f = reads.entry(id).or_insert(from);
                    *f = (*f).min(from);
                }
                E2eeOp::Send {
                    conversation_id,
                    client_msg_id,
                    text,
                } => {
                    let result = e2ee
                        .send_text_with_id(conversation_id, &client_msg_id, &text)
                        .await
                        .map_err(|e| e.to_string());
                    if tx
                        .send(AppEvent::Acked {
                            client_msg_id,
                            result,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            next = ops.try_recv().ok();
        }
        for (id, from) in reads {
            let event = match e2ee.history_from(id, from).await {
                Ok(messages) => AppEvent::Decrypted {
                    conversation_id: id,
                    messages,
                },
                Err(e) => {
                    AppEvent::Notice(format!("🔒 cannot read the encrypted conversation: {e}"))
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Encrypts a file with a fresh key, uploads the ciphertext and sends the
/// key in an MLS message; answers the stored (encrypted) message.
async fn send_encrypted_file(
    e2ee: &E2ee,
    conversation_id: ConversationId,
    path: std::path::PathBuf,
    progress: impl Fn(u64, u64),
) -> Result<MessageRecord, String> {
    let mime = confab_sdk::guess_content_type(&path);
    let kind = if mime.starts_with("image/") {
        MessageKind::Image
    } else if mime.starts_with("audio/") {
        MessageKind::Voice
    } else {
        MessageKind::File
    };
    let attachment = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Attachment::from_file(&path, kind))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let total = attachment.data.len() as u64;
    progress(0, total);
    let seq = e2ee
        .send_attachment(conversation_id, attachment)
        .await
        .map_err(|e| e.to_string())?;
    progress(total, total);
    e2ee.client()
        .history_around(conversation_id, seq, 1)
        .await
        .map_err(|e| e.to_string())?
        .messages
        .into_iter()
        .find(|m| m.seq == seq)
        .ok_or_else(|| format!("{}: sent, but not found in the history", path.display()))
}
