//! Group commit: one task owns the write path. Sends, receipts and cursor
//! moves from every connection queue up here; the task takes everything
//! waiting (up to `max_commit_batch`) and commits it in one transaction,
//! one fsync, then acks each sender and publishes each new message once.
//!
//! Invariants: nothing is acked or delivered before its transaction commits;
//! messages are published in commit order, so per conversation in seq order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use confab_bus::{Bus, ConnectionId, Delivery, Priority};
use confab_proto::frame::{encode_message_frame, ReceiptKind};
use confab_proto::{ApiError, ErrorCode, ServerFrame, UserId};
use confab_store::{Store, WriteOp, WriteOutcome};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::now_millis;
use crate::error::store_error;
use crate::gateway::outbound::Outbound;
use crate::metrics;

/// Where the answer to a write goes.
pub enum ReplyTo {
    /// Nobody waits (cursor moves from WebSocket clients report only errors).
    Connection(Arc<Outbound>),
    /// An HTTP handler waits.
    Waiter(oneshot::Sender<Result<WriteOutcome, ApiError>>),
}

struct Job {
    op: WriteOp,
    meta: JobMeta,
}

/// Who waits for a write, kept beside it while the batch commits.
struct JobMeta {
    reply: ReplyTo,
    /// The connection the write came from: it gets the ack, not an echo.
    origin: Option<ConnectionId>,
    received: Instant,
}

/// Cheap, cloneable handle for queueing writes.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the commit task. It ends when every handle is dropped, after
    /// committing what was queued.
    pub fn spawn(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        max_batch: usize,
    ) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 16);
        let task = tokio::spawn(run(rx, store, bus, max_batch.max(1)));
        (Committer { tx }, task)
    }

    /// Queues a write. Waits while the queue is full (backpressure).
    pub async fn submit(
        &self,
        op: WriteOp,
        reply: ReplyTo,
        origin: Option<ConnectionId>,
    ) -> Result<(), ApiError> {
        let job = Job {
            op,
            meta: JobMeta {
                reply,
                origin,
                received: Instant::now(),
            },
        };
        self.tx.send(job).await.map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "server is shutting down, retry on another node",
            )
        })
    }

    /// Queues a write and waits for its outcome.
    pub async fn commit(&self, op: WriteOp) -> Result<WriteOutcome, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.submit(op, ReplyTo::Waiter(tx), None).await?;
        rx.await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "commit was interrupted"))?
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, store: Arc<dyn Store>, bus: Arc<dyn Bus>, max: usize) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    let mut ops: Vec<WriteOp> = Vec::with_capacity(max);
    let mut metas: Vec<JobMeta> = Vec::with_capacity(max);
    while rx.recv_many(&mut jobs, max).await > 0 {
        metrics::commit_queue(rx.len());
        let now = now_millis();
        ops.clear();
        metas.clear();
        for Job { mut op, meta } in jobs.drain(..) {
            if let WriteOp::Append(m) = &mut op {
                m.ts = now;
            }
            ops.push(op);
            metas.push(meta);
        }
        let started = Instant::now();
        let result = store.commit_batch(&ops).await;
        match result {
            Ok(outcomes) => {
                let appended = outcomes
                    .iter()
                    .filter(|o| {
                        matches!(
                            o,
                            WriteOutcome::Appended {
                                duplicate: false,
                                ..
                            }
                        )
                    })
                    .count();
                metrics::commit(ops.len(), appended as u64, started.elapsed());
                for ((meta, op), outcome) in metas.drain(..).zip(ops.drain(..)).zip(outcomes) {
                    dispatch(bus.as_ref(), meta, op, outcome).await;
                }
            }
            Err(e) => {
                let err = store_error(e);
                tracing::warn!(batch = ops.len(), error = %err, "commit failed; nothing acked");
                for (meta, op) in metas.drain(..).zip(ops.drain(..)) {
                    reply_error(meta.reply, client_msg_id(&op), err.clone());
                }
            }
        }
    }
}

fn client_msg_id(op: &WriteOp) -> Option<String> {
    match op {
        WriteOp::Append(m) => Some(m.client_msg_id.clone()),
        _ => None,
    }
}

fn reply_error(reply: ReplyTo, client_msg_id: Option<String>, err: ApiError) {
    metrics::error(err.code);
    match reply {
        ReplyTo::Connection(out) => {
            let frame = ServerFrame::error(client_msg_id, err).encode();
            let _ = out.push(Priority::Control, Bytes::from(frame));
        }
        ReplyTo::Waiter(tx) => {
            let _ = tx.send(Err(err));
        }
    }
}

async fn publish(
    bus: &dyn Bus,
    users: Arc<[UserId]>,
    origin: Option<ConnectionId>,
    priority: Priority,
    frame: String,
) {
    let delivery = Delivery {
        users,
        skip_user: None,
        skip_connection: origin,
        priority,
        frame: Bytes::from(frame),
    };
    if let Err(e) = bus.publish(delivery).await {
        // Committed anyway: recipients get it when they sync.
        tracing::warn!(error = %e, "publish failed; recipients will catch up by sync");
    }
}

async fn dispatch(bus: &dyn Bus, meta: JobMeta, op: WriteOp, outcome: WriteOutcome) {
    match (op, outcome) {
        (
            WriteOp::Append(m),
            WriteOutcome::Appended {
                seq,
                ts,
                duplicate,
                members,
            },
        ) => {
            if !duplicate {
                let frame = encode_message_frame(
                    m.conversation_id,
                    seq,
                    m.sender_id,
                    &m.client_msg_id,
                    m.kind,
                    &m.body,
                    ts,
                );
                publish(bus, members, meta.origin, Priority::Message, frame).await;
                metrics::send_to_delivery(meta.received.elapsed());
            }
            let ack = ServerFrame::Ack {
                client_msg_id: m.client_msg_id,
                conversation_id: m.conversation_id,
                seq,
                ts,
            };
            match meta.reply {
                ReplyTo::Connection(out) => {
                    let _ = out.push(Priority::Control, Bytes::from(ack.encode()));
                }
                ReplyTo::Waiter(tx) => {
                    let _ = tx.send(Ok(WriteOutcome::Appended {
                        seq,
                        ts,
                        duplicate,
                        members: Arc::from(Vec::new()),
                    }));
                }
            }
        }
        (op, WriteOutcome::CursorMoved { seq, members }) => {
            let (user_id, conversation_id, kind) = match &op {
                WriteOp::Read {
                    user_id,
                    conversation_id,
                    ..
                } => (*user_id, *conversation_id, ReceiptKind::Read),
                WriteOp::Delivered {
                    user_id,
                    conversation_id,
                    ..
                } => (*user_id, *conversation_id, ReceiptKind::Delivered),
                WriteOp::Append(_) => return,
            };
            let frame = ServerFrame::Receipt {
                conversation_id,
                user_id,
                kind,
                seq,
            }
            .encode();
            publish(bus, members.clone(), meta.origin, Priority::Control, frame).await;
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(WriteOutcome::CursorMoved { seq, members }));
            }
        }
        (op, WriteOutcome::Rejected(code)) => {
            let message = match code {
                ErrorCode::NotFound => "no such conversation, or you are not a member of it",
                _ => "refused",
            };
            reply_error(meta.reply, client_msg_id(&op), ApiError::new(code, message));
        }
        (_, outcome) => {
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(outcome));
            }
        }
    }
}
