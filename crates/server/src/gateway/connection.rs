//! One WebSocket connection: a single task that reads client frames, writes
//! the outbound queue, and keeps the heartbeat.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_bus::{ConnectionId, Delivery, Priority};
use confab_proto::frame::{FrameError, TypingState};
use confab_proto::{ApiError, ClientFrame, ConversationId, ErrorCode, ServerFrame, UserId};
use confab_store::WriteOp;
use futures_util::SinkExt;
use tokio::task::JoinHandle;
use yawc::close::CloseCode;
use yawc::{Frame, HttpStream, OpCode, WebSocketError};

use super::rate::TokenBucket;
use super::sync::answer_sync;
use super::typing::Typing;
use crate::auth::AuthUser;
use crate::chat::calls::Signal;
use crate::chat::send::{queue_send, SendRequest};
use crate::clock::now_millis;
use crate::committer::ReplyTo;
use crate::hub::ConnectionEntry;
use crate::metrics;
use crate::outbound::{Closed, Outbound};
use crate::state::AppState;

/// Most frames written per flush, so reading is not starved under load.
const FLUSH_BATCH: usize = 256;
/// Syncs a connection may have queued or running at once.
const MAX_SYNCS_IN_FLIGHT: usize = 4;
/// A client that does not take our writes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answer to a client's close frame may take to leave.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The upgraded socket, with permessage-deflate when it was agreed.
type WebSocket = yawc::WebSocket<HttpStream>;

/// WebSocket close codes we use.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TRY_AGAIN: u16 = 1013;
}

struct Connection {
    state: AppState,
    who: AuthUser,
    id: ConnectionId,
    out: Arc<Outbound>,
    socket: WebSocket,
    sends: TokenBucket,
    last_heard: Instant,
    sync_task: Option<JoinHandle<()>>,
    syncs_in_flight: Arc<AtomicUsize>,
    typing: Typing,
}

/// Runs a connection until it closes, then unregisters it.
pub async fn serve(state: AppState, socket: WebSocket, who: AuthUser) {
    let limits = &state.config.limits;
    let out = Arc::new(Outbound::new(
        limits.outbound_queue_frames,
        limits.outbound_queue_bytes,
    ));
    let id = state.hub.next_connection_id();
    let entry = ConnectionEntry {
        id,
        device_id: who.device_id,
        outbound: out.clone(),
    };
    {
        let _user = state.presence.lock_user(who.user_id).await;
        if state.hub.register(who.user_id, entry) {
            if let Err(e) = state.bus.set_interest(who.user_id, true).await {
                tracing::warn!(error = %e, "could not subscribe user on the bus");
            }
            state.presence.connected(who.user_id).await;
        }
    }
    state
        .open_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::connections(1.0);
    let sends = TokenBucket::new(limits.send_rate_per_s, limits.send_burst);
    let mut conn = Connection {
        state: state.clone(),
        who,
        id,
        out: out.clone(),
        socket,
        sends,
        last_heard: Instant::now(),
        sync_task: None,
        syncs_in_flight: Arc::new(AtomicUsize::new(0)),
        typing: Typing::new(Duration::from_millis(state.config.chat.typing_timeout_ms)),
    };
    let reason = conn.run().await;
    tracing::debug!(
        user = who.user_id,
        connection = id,
        reason,
        "connection closed"
    );
    if let Some(task) = conn.sync_task.take() {
        task.abort();
    }
    out.close();
    state.calls.connection_closed(who.user_id, id).await;
    for (conversation_id, audience) in conn.typing.drain() {
        conn.publish_typing(conversation_id, audience, TypingState::Stop)
            .await;
    }
    {
        let _user = state.presence.lock_user(who.user_id).await;
        if state.hub.unregister(who.user_id, id) {
            if let Err(e) = state.bus.set_interest(who.user_id, false).await {
                tracing::warn!(error = %e, "could not unsubscribe user on the bus");
            }
            state.presence.disconnected(who.user_id).await;
        }
    }
    state
        .open_connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    metrics::connections(-1.0);
}

impl Connection {
    async fn run(&mut self) -> &'static str {
        let heartbeat_s = self.state.config.heartbeat_s.max(1);
        let hello = ServerFrame::Hello {
            user_id: self.who.user_id,
            device_id: self.who.device_id,
            server_time: now_millis(),
            heartbeat_s,
            receipts_max_group: self.state.config.chat.receipts_max_group,
            typing_timeout_ms: self.state.config.chat.typing_timeout_ms,
        };
        if self.write_now(hello.encode()).await.is_err() {
            return "hello failed";
        }
        // Where every friend stands, right after hello.
        for frame in self.state.presence.snapshot_frames(self.who.user_id).await {
            self.reply(frame);
        }
        let idle_limit = Duration::from_secs(heartbeat_s * 3);
        let period = Duration::from_secs(heartbeat_s);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = Box::pin(self.flush()).await;
                    Box::pin(self.close(close::GOING_AWAY, "server shutting down, reconnect")).await;
                    return "shutdown";
                }
                _ = self.out.wait_ready() => {
                    if let Err(reason) = Box::pin(self.flush()).await {
                        return reason;
                    }
                }
                msg = self.socket.next_frame() => {
                    let msg = match msg {
                        Ok(msg) => msg,
                        Err(WebSocketError::FrameTooLarge) => {
                            // Over the hard cap, on the wire or once
                            // inflated: yawc has queued the close (1009)
                            // the protocol promises; send it, then end.
                            metrics::frame_in("oversized");
                            self.send_queued_close().await;
                            return "frame over the hard cap";
                        }
                        Err(_) => {
                            // A protocol error (bad UTF-8, bad deflate
                            // data, ...): yawc has queued its close frame.
                            self.send_queued_close().await;
                            return "peer closed";
                        }
                    };
                    self.last_heard = Instant::now();
                    if !Box::pin(self.handle(msg)).await {
                        // yawc queued the answering close frame: send it.
                        self.send_queued_close().await;
                        return "peer sent close";
                    }
                }
                _ = sleep_until_or_never(self.typing.next_deadline()) => {
                    for (conversation_id, audience) in self.typing.expire(Instant::now().into()) {
                        Box::pin(self.publish_typing(conversation_id, audience, TypingState::Stop)).await;
                    }
                }
                _ = heartbeat.tick() => {
                    if self.last_heard.elapsed() > idle_limit {
                        Box::pin(self.close(close::NORMAL, "idle timeout")).await;
                        return "idle timeout";
                    }
                    if Box::pin(self.write_message(Frame::ping(Bytes::new()))).await.is_err() {
                        return "ping failed";
                    }
                }
            }
        }
    }

    /// Writes queued frames, most urgent first.
    async fn flush(&mut self) -> Result<(), &'static str> {
        let mut written = 0u64;
        while let Some(frame) = self.out.pop() {
            let fed =
                tokio::time::timeout(WRITE_TIMEOUT, self.socket.feed(Frame::text(frame))).await;
            if !matches!(fed, Ok(Ok(()))) {
                return Err("write failed");
            }
            written += 1;
            if written as usize >= FLUSH_BATCH {
                break;
            }
        }
        if written > 0 {
            let flushed = tokio::time::timeout(WRITE_TIMEOUT, self.socket.flush()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                return Err("flush failed");
            }
            metrics::frames_out(written);
        }
        match self.out.closed() {
            Some(Closed::TooSlow) => {
                metrics::slow_consumer();
                self.close(close::POLICY, "too slow to read; reconnect and sync")
                    .await;
                return Err("slow consumer");
            }
            Some(Closed::Revoked) => {
                self.close(close::POLICY, "logged out").await;
                return Err("device revoked");
            }
            Some(Closed::Resync) => {
                self.close(
                    close::TRY_AGAIN,
                    "deliveries interrupted; reconnect and sync",
                )
                .await;
                return Err("resync");
            }
            _ => {}
        }
        // More may be left after a full batch: make sure we come back.
        if written as usize >= FLUSH_BATCH {
            self.out.wake();
        }
        Ok(())
    }

    async fn write_message(&mut self, msg: Frame) -> Result<(), ()> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn write_now(&mut self, text: String) -> Result<(), ()> {
        self.write_message(Frame::text(text)).await
    }

    /// Sends the close frame yawc queued when it refused a frame (its code
    /// says why: 1009 too big, 1007 bad UTF-8, 1002 protocol). yawc sends
    /// queued frames when the sink is next polled for readiness, which a
    /// plain flush does not do; bounded by `CLOSE_REPLY_TIMEOUT`.
    async fn send_queued_close(&mut self) {
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async {
            std::future::poll_fn(|cx| socket.poll_ready_unpin(cx)).await?;
            socket.flush().await
        })
        .await;
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .write_message(Frame::close(CloseCode::from(code), reason))
            .await;
    }

    fn reply(&self, frame: ServerFrame) {
        let _ = self
            .out
            .push(Priority::Control, Bytes::from(frame.encode()));
    }

    fn reply_error(&self, client_msg_id: Option<String>, err: ApiError) {
        metrics::error(err.code);
        self.reply(ServerFrame::error(client_msg_id, err));
    }

    /// Handles one incoming WebSocket message; false ends the connection.
    async fn handle(&mut self, msg: Frame) -> bool {
        match msg.opcode() {
            OpCode::Text => {
                // yawc checks the UTF-8 (`with_utf8`, closing with 1007);
                // checked again here rather than trusted to never panic.
                let Ok(text) = std::str::from_utf8(msg.payload()) else {
                    metrics::frame_in("bad");
                    let err = ApiError::new(ErrorCode::BadFrame, "text frame is not utf-8");
                    self.reply_error(None, err);
                    return true;
                };
                let max = self.state.config.limits.max_frame_bytes;
                if text.len() > max {
                    metrics::frame_in("oversized");
                    self.reply_error(
                        None,
                        ApiError::new(
                            ErrorCode::MessageTooLarge,
                            format!("frame is over {max} bytes"),
                        ),
                    );
                    return true;
                }
                match ClientFrame::decode(text) {
                    // Boxed: the dispatch state machine is large and rarely
                    // live; inline it would sit in every idle connection.
                    Ok(frame) => Box::pin(self.dispatch(frame)).await,
                    Err(FrameError {
                        client_msg_id,
                        error,
                    }) => {
                        metrics::frame_in("bad");
                        self.reply_error(client_msg_id, error);
                    }
                }
                true
            }
            OpCode::Binary => {
                metrics::frame_in("binary");
                self.reply_error(
                    None,
                    ApiError::new(
                        ErrorCode::BadFrame,
                        "binary frames are not supported; send json text frames",
                    ),
                );
                true
            }
            OpCode::Close => false,
            // Pings are answered by yawc; continuations come assembled.
            _ => true,
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Send {
                client_msg_id,
                conversation_id,
                kind,
                body,
            } => {
                metrics::frame_in("send");
                if !self.sends.try_take() {
                    let err =
                        ApiError::new(ErrorCode::RateLimited, "sending too fast, retry shortly");
                    return self.reply_error(Some(client_msg_id), err);
                }
                let send = SendRequest {
                    sender_id: self.who.user_id,
                    conversation_id,
                    client_msg_id: client_msg_id.clone(),
                    kind,
                    body,
                };
                let reply = ReplyTo::Connection(self.out.clone());
                if let Err(e) = queue_send(
                    self.state.store.as_ref(),
                    &self.state.committer,
                    &self.state.config.limits,
                    send,
                    reply,
                    Some(self.id),
                )
                .await
                {
                    self.reply_error(Some(client_msg_id), e);
                }
            }
            ClientFrame::Sync { cursors } => {
                metrics::frame_in("sync");
                if !self.sends.try_take() {
                    let err =
                        ApiError::new(ErrorCode::RateLimited, "syncing too often, retry shortly");
                    return self.reply_error(None, err);
                }
                // One sync at a time per connection, answered in order, and
                // only a few waiting: each holds its cursors in memory.
                if self.syncs_in_flight.load(AtomicOrdering::Relaxed) >= MAX_SYNCS_IN_FLIGHT {
                    let err = ApiError::new(
                        ErrorCode::RateLimited,
                        "too many syncs in flight, wait for sync_done",
                    );
                    return self.reply_error(None, err);
                }
                self.syncs_in_flight.fetch_add(1, AtomicOrdering::Relaxed);
                let previous = self.sync_task.take();
                let store = self.state.store.clone();
                let out = self.out.clone();
                let user = self.who.user_id;
                let cap = self.state.config.limits.sync_batch;
                let in_flight = self.syncs_in_flight.clone();
                self.sync_task = Some(tokio::spawn(async move {
                    if let Some(p) = previous {
                        let _ = p.await;
                    }
                    answer_sync(store, out, user, cursors, cap).await;
                    in_flight.fetch_sub(1, AtomicOrdering::Relaxed);
                }));
            }
            ClientFrame::Delivered {
                conversation_id,
                seq,
            } => {
                metrics::frame_in("delivered");
                let op = WriteOp::Delivered {
                    device_id: self.who.device_id,
                    user_id: self.who.user_id,
                    conversation_id,
                    seq,
                };
                self.submit_cursor(op, seq).await;
            }
            ClientFrame::Read {
                conversation_id,
                seq,
            } => {
                metrics::frame_in("read");
                let op = WriteOp::Read {
                    user_id: self.who.user_id,
                    conversation_id,
                    seq,
                };
                self.submit_cursor(op, seq).await;
            }
            ClientFrame::Typing {
                conversation_id,
                state,
            } => {
                metrics::frame_in("typing");
                self.typing_frame(conversation_id, state).await;
            }
            ClientFrame::Ping { nonce } => {
                metrics::frame_in("ping");
                self.reply(ServerFrame::Pong { nonce });
            }
            ClientFrame::Call {
                call_id,
                conversation_id,
                to_user_id,
                signal,
                payload,
            } => {
                metrics::frame_in("call");
                if !self.sends.try_take() {
                    let err = ApiError::new(ErrorCode::RateLimited, "signalling too fast");
                    return self.reply_error(None, err);
                }
                let signal = Signal {
                    from: self.who.user_id,
                    connection: self.id,
                    call_id,
                    conversation_id,
                    to: to_user_id,
                    signal,
                    payload,
                };
                if let Err(e) = self.state.calls.signal(signal).await {
                    self.reply_error(None, e);
                }
            }
        }
    }

    /// `typing`: relayed on state changes only, to members without a block
    /// either way; refreshes just keep it alive.
    async fn typing_frame(&mut self, conversation_id: ConversationId, state: TypingState) {
        let now = tokio::time::Instant::now();
        match state {
            TypingState::Start => {
                if self.typing.refresh(conversation_id, now) {
                    return;
                }
                if !self.sends.try_take() {
                    return; // typing is best effort: drop it quietly
                }
                let audience = match self
                    .state
                    .store
                    .audience(conversation_id, self.who.user_id)
                    .await
                {
                    Ok(Some(a)) => Arc::<[UserId]>::from(a),
                    Ok(None) => {
                        let err = crate::chat::membership::not_a_member(
                            self.state.store.as_ref(),
                            conversation_id,
                            self.who.user_id,
                        )
                        .await;
                        return self.reply_error(None, err);
                    }
                    Err(e) => return self.reply_error(None, crate::error::store_error(e)),
                };
                self.typing.start(conversation_id, audience.clone(), now);
                self.publish_typing(conversation_id, audience, TypingState::Start)
                    .await;
            }
            TypingState::Stop => {
                if let Some(audience) = self.typing.stop(conversation_id) {
                    self.publish_typing(conversation_id, audience, TypingState::Stop)
                        .await;
                }
            }
        }
    }

    async fn publish_typing(
        &mut self,
        conversation_id: ConversationId,
        audience: Arc<[UserId]>,
        state: TypingState,
    ) {
        if audience.is_empty() {
            return;
        }
        let frame = ServerFrame::Typing {
            conversation_id,
            user_id: self.who.user_id,
            state,
        };
        self.publish(audience, Some(self.who.user_id), frame).await;
    }

    async fn submit_cursor(&mut self, op: WriteOp, seq: i64) {
        if seq < 0 {
            return self.reply_error(
                None,
                ApiError::new(ErrorCode::BadRequest, "seq must not be negative"),
            );
        }
        let reply = ReplyTo::Connection(self.out.clone());
        if let Err(e) = self.state.committer.submit(op, reply, Some(self.id)).await {
            self.reply_error(None, e);
        }
    }

    async fn publish(&mut self, users: Arc<[i64]>, skip_user: Option<i64>, frame: ServerFrame) {
        let delivery = Delivery {
            skip_user,
            skip_connection: Some(self.id),
            ..Delivery::to(users, Priority::Control, frame.encode())
        };
        crate::events::send(self.state.bus.as_ref(), delivery).await;
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
