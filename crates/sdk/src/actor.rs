//! The connection actor: one task that owns the socket, reconnects with
//! backoff (until closed, or until the session is revoked), and keeps the
//! outbox and the ordering state across sockets. This file is the
//! lifecycle (connect, wait, shut down); what happens on an open socket is
//! in `link.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use confab_proto::{ApiError, ConversationId, Seq};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::client::Client;
use crate::connection::{Command, ConnectOptions, Shared, Waiter};
use crate::error::Error;
use crate::event::Event;
use crate::ordering::Ordering;
use crate::outbox::Outbox;
use crate::session::ws_url;
use crate::socket::{self, WsStream};

/// Why a socket (or an attempt to open one) ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The application closed the connection: stop for good.
    Closed,
    /// The socket failed or went quiet: reconnect after a backoff.
    Lost(String),
}

/// The actor's state; lives as long as the connection.
pub(crate) struct Actor {
    pub(crate) client: Client,
    pub(crate) options: ConnectOptions,
    urls: Vec<String>,
    next_url: usize,
    pub(crate) ordering: Ordering,
    pub(crate) outbox: Outbox<Waiter>,
    /// Read and delivered cursors asked for while offline, sent on connect.
    pub(crate) pending_reads: HashMap<ConversationId, Seq>,
    pub(crate) pending_delivered: HashMap<ConversationId, Seq>,
    pub(crate) commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    pub(crate) closing: watch::Receiver<bool>,
    pub(crate) shared: Arc<Shared>,
    /// The user, once a `hello` named it: our own acked messages are
    /// delivered to the application with this sender id.
    pub(crate) user_id: Option<confab_proto::UserId>,
}

impl Actor {
    pub(crate) fn new(
        client: Client,
        options: ConnectOptions,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        closing: watch::Receiver<bool>,
        shared: Arc<Shared>,
    ) -> Actor {
        // The client's server first, then its other servers, then the
        // options' extra URLs, each once.
        let mut urls: Vec<String> = Vec::new();
        let candidates = std::iter::once(client.ws_url())
            .chain(client.servers().iter().map(|u| ws_url(u)))
            .chain(options.urls.iter().map(|u| ws_url(u)));
        for u in candidates {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let ordering = Ordering::new(options.cursors.clone(), options.max_buffered);
        Actor {
            client,
            options,
            urls,
            next_url: 0,
            ordering,
            outbox: Outbox::default(),
            pending_reads: HashMap::new(),
            pending_delivered: HashMap::new(),
            commands,
            events,
            closing,
            shared,
            user_id: None,
        }
    }

    /// Connects, runs the socket until it ends, waits, and again, until
    /// the application closes the connection.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(self.options.backoff);
        loop {
            if *self.closing.borrow() {
                break;
            }
            let url = self
                .urls
                .get(self.next_url % self.urls.len().max(1))
                .cloned()
                .unwrap_or_else(|| self.client.ws_url());
            self.next_url = self.next_url.wrapping_add(1);
            let exit = match self.open(&url).await {
                Ok(ws) => self.run_link(ws, &mut backoff).await,
                Err(exit) => exit,
            };
            self.outbox.on_disconnected();
            self.shared.connected.store(false, AtomicOrdering::Relaxed);
            match exit {
                Exit::Closed => break,
                Exit::Lost(reason) => debug!(%url, %reason, "connection lost; reconnecting"),
            }
            let delay = backoff.next_delay();
            if self.offline(tokio::time::sleep(delay)).await.is_err() {
                break;
            }
        }
        self.shut_down();
    }

    /// Opens a socket to `url`; on a 401 refreshes the session so the next
    /// attempt has a fresh token.
    async fn open(&mut self, url: &str) -> Result<WsStream, Exit> {
        let Some(token) = self.client.access_token() else {
            return Err(Exit::Lost("not logged in".into()));
        };
        let trust = self.client.trust().cloned();
        let dial = tokio::time::timeout(
            self.options.connect_timeout,
            socket::dial(url, Some(&token), trust.as_ref(), self.options.compression),
        );
        let err = match self.offline(dial).await? {
            Ok(Ok(dialed)) => return Ok(dialed.ws),
            Ok(Err(e)) => e,
            Err(_) => return Err(Exit::Lost("connect timed out".into())),
        };
        if err.status() == Some(401) {
            let client = self.client.clone();
            let refresh = async move { client.refresh_if_stale(&token).await };
            if let Err(e) = self.offline(refresh).await? {
                warn!(error = %e, "could not refresh the session for the websocket");
                let api = match e {
                    Error::Http { error, .. } | Error::Api(error) => error,
                    other => {
                        ApiError::new(confab_proto::ErrorCode::Unauthorized, other.to_string())
                    }
                };
                // A refresh token the server refuses will never work again
                // (logged out, password changed, or replayed): stop instead
                // of retrying forever. Unsent messages fail with `Closed`.
                let dead = api.code == confab_proto::ErrorCode::InvalidRefreshToken;
                self.emit(Event::Error(api)).await?;
                if dead {
                    return Err(Exit::Closed);
                }
            }
        }
        Err(Exit::Lost(err.to_string()))
    }

    /// Runs `fut` while no socket is open, taking commands meanwhile: sends
    /// go to the outbox, cursors are kept for later, ephemeral frames are
    /// dropped. Fails with [`Exit::Closed`] if the application closes.
    pub(crate) async fn offline<F: Future>(&mut self, fut: F) -> Result<F::Output, Exit> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                _ = self.closing.changed() => return Err(Exit::Closed),
                out = &mut fut => return Ok(out),
                cmd = self.commands.recv() => match cmd {
                    None => return Err(Exit::Closed),
                    Some(cmd) => self.keep_for_later(cmd),
                },
            }
        }
    }

    pub(crate) fn keep_for_later(&mut self, cmd: Command) {
        match cmd {
            Command::Send { msg, waiter } => {
                self.outbox.push(msg, waiter);
                self.publish_outbox_len();
            }
            Command::Read {
                conversation_id,
                seq,
            } => raise(&mut self.pending_reads, conversation_id, seq),
            Command::Delivered {
                conversation_id,
                seq,
            } => raise(&mut self.pending_delivered, conversation_id, seq),
            Command::Ephemeral(frame) => debug!(?frame, "offline: dropping ephemeral frame"),
            Command::KillTransport => {}
        }
    }

    /// Hands an event to the application, waiting while its buffer is full
    /// (unless the application closes meanwhile).
    pub(crate) async fn emit(&mut self, event: Event) -> Result<(), Exit> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Exit::Closed),
            Err(TrySendError::Full(event)) => tokio::select! {
                _ = self.closing.changed() => Err(Exit::Closed),
                sent = self.events.send(event) => sent.map_err(|_| Exit::Closed),
            },
        }
    }

    /// Hands an event over only if there is room (used while closing).
    pub(crate) fn emit_if_room(&mut self, event: Event) {
        let _ = self.events.try_send(event);
    }

    pub(crate) fn publish_outbox_len(&self) {
        self.shared
            .outbox_len
            .store(self.outbox.len(), AtomicOrdering::Relaxed);
    }

    /// Fails everything still pending and lets the handles see the end.
    fn shut_down(mut self) {
        self.shared.connected.store(false, AtomicOrdering::Relaxed);
        self.shared.outbox_slots.close();
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Send { waiter, .. } = cmd {
                let _ = waiter.reply.send(Err(Error::Closed));
            }
        }
        for waiter in self.outbox.drain() {
            let _ = waiter.reply.send(Err(Error::Closed));
        }
        self.publish_outbox_len();
        debug!("connection closed");
    }
}

/// Raises a cumulative cursor, never lowering it.
pub(crate) fn raise(cursors: &mut HashMap<ConversationId, Seq>, id: ConversationId, seq: Seq) {
    let c = cursors.entry(id).or_insert(seq);
    *c = (*c).max(seq);
}
