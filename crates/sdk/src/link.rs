//! One open socket of the connection actor: the hello/sync/resend dance on
//! connect, frames in (ordered, deduplicated, turned into events), commands
//! out, the idle timer, and sync bookkeeping.

use std::collections::HashMap;
use std::time::Duration;

use confab_proto::{ApiError, ClientFrame, ConversationId, MessageRecord, Seq, ServerFrame};
use futures_util::{FutureExt, SinkExt};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::warn;
use yawc::{Frame, OpCode, WebSocketError};

use crate::actor::{raise, Actor, Exit};
use crate::backoff::Backoff;
use crate::connection::Command;
use crate::error::Error;
use crate::event::{Ack, Event};
use crate::ordering::Push;
use crate::raw::decode_server_frame;
use crate::socket::WsStream;

/// Frames read in one go (without waiting) before acting on them as a batch.
const MAX_BATCH: usize = 256;
/// Commands taken in one go before writing their frames.
const MAX_COMMANDS: usize = 256;
/// How long a graceful close waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What is known about the current socket.
struct Link {
    /// `hello` arrived: the socket is usable.
    hello: bool,
    /// Reconnect if nothing arrives by then.
    deadline: Instant,
    /// How far `deadline` is pushed by each arrival.
    idle: Duration,
    /// `sync` frames sent whose `sync_done` has not arrived (answered in order).
    syncs_outstanding: usize,
    /// The latest `sync_done` said more messages remain.
    more: bool,
    /// A gap was seen: check it is filled once no sync is outstanding.
    gap_pending: bool,
    /// An ordering buffer overflowed: a sync is needed whatever the gaps say.
    force_sync: bool,
    /// `SyncComplete` was emitted for this socket.
    sync_complete: bool,
}

/// What one batch of frames left to do.
#[derive(Default)]
struct Batch {
    /// Highest seq delivered per conversation, for `delivered` frames.
    delivered: HashMap<ConversationId, Seq>,
    /// Frames to write at the end of the batch.
    frames: Vec<ClientFrame>,
}

impl Actor {
    /// Runs one open socket until it fails or the application closes.
    pub(crate) async fn run_link(&mut self, mut ws: WsStream, backoff: &mut Backoff) -> Exit {
        let mut link = Link {
            hello: false,
            deadline: Instant::now() + self.options.connect_timeout,
            idle: self.options.connect_timeout,
            syncs_outstanding: 0,
            more: false,
            gap_pending: false,
            force_sync: false,
            sync_complete: false,
        };
        let exit = loop {
            let retry_at = if link.hello {
                self.outbox.next_retry()
            } else {
                None
            };
            let step = tokio::select! {
                _ = self.closing.changed() => Err(Exit::Closed),
                first = ws.next_frame() => self.on_socket(&mut ws, &mut link, backoff, first).await,
                cmd = self.commands.recv() => self.on_commands(&mut ws, &link, cmd).await,
                _ = sleep_until(link.deadline) => Err(Exit::Lost("nothing received from the server in time".into())),
                _ = sleep_until(retry_at.unwrap_or(link.deadline)), if retry_at.is_some() => {
                    let due = self.outbox.take_due(Instant::now());
                    self.write(&mut ws, due).await
                }
            };
            if let Err(exit) = step {
                break exit;
            }
        };
        match &exit {
            Exit::Closed => {
                let _ = timeout(CLOSE_WAIT, async {
                    let _ = ws
                        .send(Frame::close(yawc::close::CloseCode::Normal, b""))
                        .await;
                    while ws.next_frame().await.is_ok() {}
                })
                .await;
                if link.hello {
                    self.emit_if_room(Event::Disconnected {
                        reason: "closed by the application".into(),
                    });
                }
                Exit::Closed
            }
            Exit::Lost(reason) if link.hello => {
                let event = Event::Disconnected {
                    reason: reason.clone(),
                };
                match self.emit(event).await {
                    Ok(()) => exit,
                    Err(closed) => closed,
                }
            }
            Exit::Lost(_) => exit,
        }
    }

    /// Handles a batch of frames: the one `select!` got and whatever else
    /// is already readable, then writes the `delivered` and `sync` frames
    /// the batch calls for (coalesced: one per conversation per batch).
    async fn on_socket(
        &mut self,
        ws: &mut WsStream,
        link: &mut Link,
        backoff: &mut Backoff,
        first: Result<Frame, WebSocketError>,
    ) -> Result<(), Exit> {
        let mut batch = Batch::default();
        let mut next = first;
        for handled in 1..=MAX_BATCH {
            match next {
                Err(WebSocketError::ConnectionClosed) => {
                    return Err(Exit::Lost("the server closed the connection".into()))
                }
                Err(e) => return Err(Exit::Lost(e.to_string())),
                Ok(msg) => {
                    link.deadline = Instant::now() + link.idle;
                    match msg.opcode() {
                        OpCode::Text => match std::str::from_utf8(msg.payload())
                            .map_err(|e| Error::Decode(e.to_string()))
                            .and_then(decode_server_frame)
                        {
                            Ok(frame) => self.on_frame(link, backoff, &mut batch, frame).await?,
                            Err(e) => warn!(error = %e, "ignoring a frame the sdk cannot read"),
                        },
                        OpCode::Close => {
                            let reason = msg.close_reason().ok().flatten().unwrap_or_default();
                            return Err(Exit::Lost(format!(
                                "the server closed the connection: {reason}"
                            )));
                        }
                        // Pings are answered by yawc as we read; binary
                        // frames are not part of the protocol.
                        _ => {}
                    }
                }
            }
            // Stop before reading a frame this batch would not handle: a
            // frame taken off the socket must be handled, never dropped.
            if handled == MAX_BATCH {
                break;
            }
            match ws.next_frame().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        self.finish_batch(ws, link, batch).await
    }

    async fn on_frame(
        &mut self,
        link: &mut Link,
        backoff: &mut Backoff,
        batch: &mut Batch,
        frame: ServerFrame,
    ) -> Result<(), Exit> {
        match frame {
            ServerFrame::Hello {
                user_id,
                device_id,
                heartbeat_s,
                ..
            } => {
                if link.hello {
                    return Ok(());
                }
                link.hello = true;
                self.user_id = Some(user_id);
                link.idle = self
                    .options
                    .idle_timeout
                    .unwrap_or_else(|| Duration::from_secs(heartbeat_s.saturating_mul(3).max(1)));
                link.deadline = Instant::now() + link.idle;
                backoff.reset();
                self.shared
                    .connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.emit(Event::Connected { user_id, device_id }).await?;
                batch.frames.push(self.sync_frame(link));
                for (conversation_id, seq) in self.pending_reads.drain() {
                    batch.frames.push(ClientFrame::Read {
                        conversation_id,
                        seq,
                    });
                }
                for (conversation_id, seq) in self.pending_delivered.drain() {
                    batch.frames.push(ClientFrame::Delivered {
                        conversation_id,
                        seq,
                    });
                }
                batch.frames.extend(self.outbox.on_connected());
            }
            ServerFrame::Message(record) => self.deliver(link, batch, record).await?,
            ServerFrame::Ack {
                client_msg_id,
                conversation_id,
                seq,
                ts,
            } => {
                if let Some((msg, waiters)) = self.outbox.ack(&client_msg_id) {
                    let ack = Ack {
                        client_msg_id,
                        conversation_id,
                        seq,
                        ts,
                    };
                    for waiter in waiters {
                        let _ = waiter.reply.send(Ok(ack.clone()));
                    }
                    self.publish_outbox_len();
                    // The server does not echo a message to the connection
                    // that sent it: the ack is its delivery here.
                    if let Some(sender_id) = self.user_id {
                        let own = MessageRecord {
                            conversation_id,
                            seq,
                            sender_id,
                            client_msg_id: ack.client_msg_id,
                            kind: msg.kind,
                            body: msg.body,
                            ts,
                            read_by: None,
                            edited_at: None,
                            deleted: false,
                            reactions: Default::default(),
                        };
                        self.deliver(link, batch, own).await?;
                    }
                }
            }
            ServerFrame::Error {
                client_msg_id: Some(id),
                code,
                message,
            } if self.outbox.contains(&id) => {
                if code.is_retryable() {
                    let config = self.options.backoff;
                    let mut rng = rand::thread_rng();
                    self.outbox
                        .defer(&id, |n| Instant::now() + config.delay(n, &mut rng));
                } else if let Some(waiters) = self.outbox.fail(&id) {
                    let error = Error::Api(ApiError::new(code, message));
                    for waiter in waiters {
                        let _ = waiter.reply.send(Err(error.clone()));
                    }
                    self.publish_outbox_len();
                }
            }
            ServerFrame::Error { code, message, .. } => {
                self.emit(Event::Error(ApiError::new(code, message)))
                    .await?;
            }
            ServerFrame::SyncDone { has_more, floors } => {
                // Seqs below a join point will never come: skip to it and
                // release what waited behind that gap.
                for (conversation_id, floor) in floors {
                    for record in self.ordering.advance(conversation_id, floor) {
                        raise(&mut batch.delivered, record.conversation_id, record.seq);
                        self.emit(Event::Message(record)).await?;
                    }
                }
                link.syncs_outstanding = link.syncs_outstanding.saturating_sub(1);
                link.more = has_more.values().any(|more| *more);
            }
            other => {
                if let Some(event) = Event::from_plain_frame(other) {
                    self.emit(event).await?;
                }
            }
        }
        Ok(())
    }

    /// Puts a message through the ordering buffer and emits what is ready.
    async fn deliver(
        &mut self,
        link: &mut Link,
        batch: &mut Batch,
        record: MessageRecord,
    ) -> Result<(), Exit> {
        match self.ordering.push(record) {
            Push::Duplicate => {}
            Push::Ready(records) => {
                for record in records {
                    raise(&mut batch.delivered, record.conversation_id, record.seq);
                    self.emit(Event::Message(record)).await?;
                }
            }
            Push::Buffered => link.gap_pending = true,
            Push::Overflowed => link.force_sync = true,
        }
        Ok(())
    }

    /// Writes what the batch calls for, and decides whether to sync again.
    async fn finish_batch(
        &mut self,
        ws: &mut WsStream,
        link: &mut Link,
        mut batch: Batch,
    ) -> Result<(), Exit> {
        if link.hello && self.options.auto_delivered {
            for (conversation_id, seq) in batch.delivered.drain() {
                batch.frames.push(ClientFrame::Delivered {
                    conversation_id,
                    seq,
                });
            }
        }
        // Every sync names every known cursor, so one outstanding sync
        // covers every gap: sync again only once none is outstanding.
        if link.hello && link.syncs_outstanding == 0 {
            let gaps = link.gap_pending && self.ordering.has_gaps();
            if link.more || gaps || link.force_sync {
                batch.frames.push(self.sync_frame(link));
            }
            link.more = false;
            link.gap_pending = false;
            link.force_sync = false;
        }
        self.write(ws, batch.frames).await?;
        if link.hello && link.syncs_outstanding == 0 && !link.sync_complete {
            link.sync_complete = true;
            self.emit(Event::SyncComplete).await?;
        }
        Ok(())
    }

    /// A `sync` with every cursor, counted as outstanding.
    fn sync_frame(&mut self, link: &mut Link) -> ClientFrame {
        link.syncs_outstanding += 1;
        ClientFrame::Sync {
            cursors: self.ordering.cursors(),
        }
    }

    /// Handles a command and any others already waiting, then writes.
    async fn on_commands(
        &mut self,
        ws: &mut WsStream,
        link: &Link,
        first: Option<Command>,
    ) -> Result<(), Exit> {
        let Some(first) = first else {
            return Err(Exit::Closed);
        };
        if !link.hello {
            // Before `hello` nothing is written: keep commands for the
            // connect, as when offline (but a kill still kills).
            if matches!(first, Command::KillTransport) {
                return Err(Exit::Lost("transport killed by the application".into()));
            }
            self.keep_for_later(first);
            return Ok(());
        }
        let mut frames = Vec::new();
        let mut sent_ids = Vec::new();
        let mut next = Some(first);
        for _ in 0..MAX_COMMANDS {
            let Some(cmd) = next.take() else { break };
            match cmd {
                Command::Send { msg, waiter } => {
                    let frame = msg.frame();
                    let id = msg.client_msg_id.clone();
                    if self.outbox.push(msg, waiter) {
                        frames.push(frame);
                        sent_ids.push(id);
                    }
                }
                Command::Read {
                    conversation_id,
                    seq,
                } => frames.push(ClientFrame::Read {
                    conversation_id,
                    seq,
                }),
                Command::Delivered {
                    conversation_id,
                    seq,
                } => frames.push(ClientFrame::Delivered {
                    conversation_id,
                    seq,
                }),
                Command::Ephemeral(frame) => frames.push(frame),
                Command::KillTransport => {
                    return Err(Exit::Lost("transport killed by the application".into()))
                }
            }
            next = self.commands.try_recv().ok();
        }
        self.publish_outbox_len();
        self.write(ws, frames).await?;
        for id in sent_ids {
            self.outbox.mark_in_flight(&id);
        }
        Ok(())
    }

    /// Writes frames with one flush, within the connect timeout.
    async fn write(&mut self, ws: &mut WsStream, frames: Vec<ClientFrame>) -> Result<(), Exit> {
        if frames.is_empty() {
            return Ok(());
        }
        let all = async {
            for frame in frames {
                ws.feed(Frame::text(frame.encode())).await?;
            }
            ws.flush().await
        };
        match timeout(self.options.connect_timeout, all).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Exit::Lost(format!("write failed: {e}"))),
            Err(_) => Err(Exit::Lost("write timed out".into())),
        }
    }
}
