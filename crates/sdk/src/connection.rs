//! The reconnecting WebSocket connection as the application sees it: a
//! cloneable [`ConnectionHandle`] that sends commands to one background
//! actor, and a [`Connection`] that also receives the actor's [`Event`]s.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use confab_proto::frame::CallSignal;
use confab_proto::frame::TypingState;
use confab_proto::{ClientFrame, ConversationId, MessageKind, Seq, UserId};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::actor::Actor;
use crate::api::new_client_msg_id;
use crate::backoff::BackoffConfig;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::event::{Ack, Event};
use crate::ordering::DEFAULT_MAX_BUFFERED;
use crate::outbox::OutgoingMessage;
use crate::socket::Compression;

/// How a [`Connection`] behaves. `ConnectOptions::default()` suits most uses.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Last seq already seen per conversation (e.g. saved from
    /// [`Connection::cursors`] last time); messages up to these are not
    /// delivered again. Conversations not named start at 0, so empty
    /// cursors replay every conversation from its start (in pages): an app
    /// that shows history over HTTP and wants only what is new seeds these
    /// with each conversation's `last_seq` from
    /// [`Client::conversations`](crate::Client::conversations), as
    /// `confab chat` does.
    pub cursors: HashMap<ConversationId, Seq>,
    /// Send cumulative `delivered` frames for what was delivered to the
    /// application (at most one per conversation per batch of frames).
    pub auto_delivered: bool,
    /// Delays between reconnect attempts and between retries of refused sends.
    pub backoff: BackoffConfig,
    /// Reconnect when nothing arrives for this long. `None`: three times the
    /// server's `heartbeat_s` from `hello`.
    pub idle_timeout: Option<Duration>,
    /// How long opening the socket and receiving `hello` may take, and how
    /// long writing one batch of frames may take.
    pub connect_timeout: Duration,
    /// More servers to fail over to, tried round-robin after the client's
    /// own server on each reconnect. HTTP base URLs or full `ws(s)://` URLs.
    pub urls: Vec<String>,
    /// Capacity of the event channel; when the application does not read,
    /// the connection stops reading the socket (backpressure).
    pub event_buffer: usize,
    /// At most this many unacked messages; further sends wait for room.
    pub max_outbox: usize,
    /// At most this many out-of-order messages held per conversation while
    /// a gap is filled; past it they are dropped and refetched by sync.
    pub max_buffered: usize,
    /// Offer permessage-deflate (RFC 7692); the server decides.
    pub compression: Compression,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            cursors: HashMap::new(),
            auto_delivered: true,
            backoff: BackoffConfig::default(),
            idle_timeout: None,
            connect_timeout: Duration::from_secs(10),
            urls: Vec::new(),
            event_buffer: 4096,
            max_outbox: 10_000,
            max_buffered: DEFAULT_MAX_BUFFERED,
            compression: Compression::Offer,
        }
    }
}

/// A command from a handle to the actor.
pub(crate) enum Command {
    /// Put a message in the outbox and send it.
    Send {
        msg: OutgoingMessage,
        waiter: Waiter,
    },
    /// Move the read cursor (kept and sent on reconnect if offline).
    Read {
        conversation_id: ConversationId,
        seq: Seq,
    },
    /// Move the delivered cursor (kept and sent on reconnect if offline).
    Delivered {
        conversation_id: ConversationId,
        seq: Seq,
    },
    /// An ephemeral frame (typing, ping, call): dropped while offline.
    Ephemeral(ClientFrame),
    /// Drop the socket without a close frame, then reconnect.
    KillTransport,
}

/// Waits for one outbox entry's outcome; holds its outbox slot until then.
pub(crate) struct Waiter {
    pub reply: oneshot::Sender<Result<Ack>>,
    pub _slot: OwnedSemaphorePermit,
}

/// State the actor shares with the handles.
pub(crate) struct Shared {
    pub outbox_len: AtomicUsize,
    pub connected: AtomicBool,
    /// One permit per free outbox place; closed when the actor ends.
    pub outbox_slots: Arc<Semaphore>,
    /// Set to true to make the actor close the socket and end.
    pub closing: watch::Sender<bool>,
}

/// A cheap, cloneable way to send on a [`Connection`] from other tasks.
#[derive(Clone)]
pub struct ConnectionHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("connected", &self.is_connected())
            .field("outbox_len", &self.outbox_len())
            .finish()
    }
}

/// The outcome of a queued send: resolves to the [`Ack`], or to the error
/// the server refused the message with ([`Error::Api`]), or to
/// [`Error::Closed`] if the connection closed first. Dropping it does not
/// cancel the send.
#[derive(Debug)]
pub struct PendingAck {
    client_msg_id: String,
    reply: oneshot::Receiver<Result<Ack>>,
}

impl PendingAck {
    /// The message's idempotency key.
    pub fn client_msg_id(&self) -> &str {
        &self.client_msg_id
    }
}

impl Future for PendingAck {
    type Output = Result<Ack>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

impl ConnectionHandle {
    /// Sends a message and waits for its ack. The message stays in the
    /// outbox, and is resent after reconnects, until acked or refused.
    pub async fn send(
        &self,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: Value,
    ) -> Result<Ack> {
        self.send_nowait(conversation_id, kind, body).await?.await
    }

    /// Like [`ConnectionHandle::send`] with a caller-chosen idempotency key
    /// (1-64 characters of `A-Z a-z 0-9 - _ . :`).
    pub async fn send_with_id(
        &self,
        client_msg_id: &str,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: Value,
    ) -> Result<Ack> {
        self.send_nowait_with_id(client_msg_id, conversation_id, kind, body)
            .await?
            .await
    }

    /// Sends `{"text": text}` and waits for its ack.
    pub async fn send_text(&self, conversation_id: ConversationId, text: &str) -> Result<Ack> {
        self.send(conversation_id, MessageKind::Text, json!({ "text": text }))
            .await
    }

    /// Puts a message in the outbox and returns without waiting for its
    /// ack; waits only while the outbox is full. Await the [`PendingAck`]
    /// for the outcome: keeping W of them keeps a window of W sends in flight.
    pub async fn send_nowait(
        &self,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: Value,
    ) -> Result<PendingAck> {
        self.queue(new_client_msg_id(), conversation_id, kind, body)
            .await
    }

    /// [`ConnectionHandle::send_nowait`] with a caller-chosen idempotency key.
    pub async fn send_nowait_with_id(
        &self,
        client_msg_id: &str,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: Value,
    ) -> Result<PendingAck> {
        confab_proto::validate::check_client_msg_id(client_msg_id).map_err(Error::Api)?;
        self.queue(client_msg_id.to_owned(), conversation_id, kind, body)
            .await
    }

    async fn queue(
        &self,
        client_msg_id: String,
        conversation_id: ConversationId,
        kind: MessageKind,
        body: Value,
    ) -> Result<PendingAck> {
        let slot = Arc::clone(&self.shared.outbox_slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let (reply, rx) = oneshot::channel();
        let msg = OutgoingMessage {
            client_msg_id: client_msg_id.clone(),
            conversation_id,
            kind,
            body,
        };
        let waiter = Waiter { reply, _slot: slot };
        self.command(Command::Send { msg, waiter }).await?;
        Ok(PendingAck {
            client_msg_id,
            reply: rx,
        })
    }

    /// Moves the user's read cursor (sent on reconnect if offline now).
    pub async fn read(&self, conversation_id: ConversationId, seq: Seq) -> Result<()> {
        self.command(Command::Read {
            conversation_id,
            seq,
        })
        .await
    }

    /// Reports delivery up to `seq` (only needed with `auto_delivered` off).
    pub async fn delivered(&self, conversation_id: ConversationId, seq: Seq) -> Result<()> {
        self.command(Command::Delivered {
            conversation_id,
            seq,
        })
        .await
    }

    /// Sends a typing indicator (dropped if offline: it is ephemeral).
    pub async fn typing(&self, conversation_id: ConversationId, state: TypingState) -> Result<()> {
        let frame = ClientFrame::Typing {
            conversation_id,
            state,
        };
        self.command(Command::Ephemeral(frame)).await
    }

    /// Sends a call signal about a call in `conversation_id` (required for
    /// `invite`) to `to_user_id`'s devices (dropped if offline).
    pub async fn call(
        &self,
        call_id: &str,
        conversation_id: Option<ConversationId>,
        to_user_id: UserId,
        signal: CallSignal,
        payload: Value,
    ) -> Result<()> {
        let frame = ClientFrame::Call {
            call_id: call_id.to_owned(),
            conversation_id,
            to_user_id,
            signal,
            payload,
        };
        self.command(Command::Ephemeral(frame)).await
    }

    /// Sends a `ping`; the answer arrives as [`Event::Pong`] (dropped if offline).
    pub async fn ping(&self, nonce: Option<Value>) -> Result<()> {
        self.command(Command::Ephemeral(ClientFrame::Ping { nonce }))
            .await
    }

    /// Drops the current socket abruptly (no close frame) to force a
    /// reconnect, e.g. to test that the outbox is resent.
    pub async fn kill_transport(&self) -> Result<()> {
        self.command(Command::KillTransport).await
    }

    /// Messages sent but not yet acked or refused.
    pub fn outbox_len(&self) -> usize {
        self.shared.outbox_len.load(AtomicOrdering::Relaxed)
    }

    /// Whether a socket is open and `hello` was received.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(AtomicOrdering::Relaxed)
    }

    /// Closes gracefully: sends a close frame, fails unacked sends with
    /// [`Error::Closed`] and waits for the background task to end.
    pub async fn close(&self) {
        self.shared.closing.send_replace(true);
        self.commands.closed().await;
    }

    async fn command(&self, cmd: Command) -> Result<()> {
        self.commands.send(cmd).await.map_err(|_| Error::Closed)
    }
}

/// A reconnecting WebSocket connection: sends through its
/// [`ConnectionHandle`] (methods are available directly via `Deref`) and
/// receives [`Event`]s, messages exactly once and in order.
///
/// The application must keep reading events: when the event buffer is
/// full the connection stops reading the socket, so acks stall too.
/// Dropping the `Connection` closes it.
pub struct Connection {
    pub(crate) handle: ConnectionHandle,
    pub(crate) events: mpsc::Receiver<Event>,
    /// Highest seq handed to the application per conversation.
    pub(crate) cursors: HashMap<ConversationId, Seq>,
}

impl std::ops::Deref for Connection {
    type Target = ConnectionHandle;

    fn deref(&self) -> &ConnectionHandle {
        &self.handle
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.handle.shared.closing.send_replace(true);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("handle", &self.handle)
            .field("cursors", &self.cursors)
            .finish()
    }
}

impl Client {
    /// Opens a reconnecting connection with this client's session; returns
    /// at once (watch for [`Event::Connected`]). Must be called inside a
    /// Tokio runtime.
    pub fn connect(&self, options: ConnectOptions) -> Result<Connection> {
        if self.session().is_none() {
            return Err(Error::NoSession);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidInput("connect must be called inside a tokio runtime".into())
        })?;
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (event_tx, event_rx) =
            mpsc::channel(options.event_buffer.clamp(1, Semaphore::MAX_PERMITS));
        let (closing, closing_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            outbox_len: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            outbox_slots: Arc::new(Semaphore::new(
                options.max_outbox.clamp(1, Semaphore::MAX_PERMITS),
            )),
            closing,
        });
        let cursors = options.cursors.clone();
        let actor = Actor::new(
            self.clone(),
            options,
            cmd_rx,
            event_tx,
            closing_rx,
            Arc::clone(&shared),
        );
        runtime.spawn(actor.run());
        Ok(Connection {
            handle: ConnectionHandle {
                commands: cmd_tx,
                shared,
            },
            events: event_rx,
            cursors,
        })
    }
}
