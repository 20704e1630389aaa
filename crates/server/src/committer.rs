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
use confab_proto::api::ConversationKind;
use confab_proto::frame::{encode_message_frame, ReceiptKind};
use confab_proto::{
    ApiError, ErrorCode, Event, MessageKind, MessageRecord, ServerFrame, SystemNotice, UserId,
};
use confab_store::{
    CommitRules, GroupChangeOutcome, MessageChangeOutcome, Store, WriteOp, WriteOutcome,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::now_millis;
use crate::error::store_error;
use crate::metrics;
use crate::outbound::Outbound;
use crate::refusal::{refusal, WriteKind};

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

/// What the committer enforces and how far receipts fan out.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Rules checked inside the transaction.
    pub rules: CommitRules,
    /// Groups up to this size get every member's read receipts live.
    pub receipts_max_group: usize,
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
        policy: Policy,
    ) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 16);
        let task = tokio::spawn(run(rx, store, bus, max_batch.max(1), policy));
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

async fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    max: usize,
    policy: Policy,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    let mut ops: Vec<WriteOp> = Vec::with_capacity(max);
    let mut metas: Vec<JobMeta> = Vec::with_capacity(max);
    while rx.recv_many(&mut jobs, max).await > 0 {
        metrics::commit_queue(rx.len());
        let now = now_millis();
        ops.clear();
        metas.clear();
        for Job { mut op, meta } in jobs.drain(..) {
            match &mut op {
                WriteOp::Append(m) => m.ts = now,
                WriteOp::Group { ts, .. } => *ts = now,
                WriteOp::Message { ts, .. } => *ts = now,
                _ => {}
            }
            ops.push(op);
            metas.push(meta);
        }
        let started = Instant::now();
        let result = store.commit_batch(&ops, policy.rules).await;
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
                    dispatch(bus.as_ref(), &policy, meta, op, outcome).await;
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

/// Sends a `system` notice as a `message` frame to `users`, and returns
/// what it says (for the `event` frame that goes with it).
async fn publish_notice(
    bus: &dyn Bus,
    notice: &MessageRecord,
    users: Arc<[UserId]>,
) -> Option<SystemNotice> {
    let frame = encode_message_frame(
        notice.conversation_id,
        notice.seq,
        notice.sender_id,
        &notice.client_msg_id,
        notice.kind,
        &notice.body.to_string(),
        notice.ts,
    );
    publish(bus, users, None, Priority::Message, frame).await;
    // Read from the body in place: `&Value` is a deserializer.
    match SystemNotice::deserialize(&notice.body) {
        Ok(said) => Some(said),
        Err(e) => {
            tracing::warn!(error = %e, seq = notice.seq, "a system notice the server cannot read");
            None
        }
    }
}

/// Delivers the `system` messages of a group change to the members and
/// the matching `event` frames: `member_left` also to whoever left,
/// `conversation_added` to new members.
async fn announce_group_change(bus: &dyn Bus, done: &GroupChangeOutcome) {
    for notice in &done.notices {
        let Some(said) = publish_notice(bus, notice, done.members_after.clone()).await else {
            continue;
        };
        let users = if matches!(said, SystemNotice::MemberLeft { .. }) {
            done.members_before.clone()
        } else {
            done.members_after.clone()
        };
        let event = said.into_event(notice.conversation_id, notice.seq, None);
        crate::events::publish(bus, users, event).await;
    }
    if let (false, Some(first)) = (done.added.is_empty(), done.notices.first()) {
        let event = Event::ConversationAdded {
            by_user_id: first.sender_id,
            conversation_id: first.conversation_id,
        };
        crate::events::publish(bus, Arc::from(done.added.clone()), event).await;
    }
}

/// Delivers the `system` notice of a message change to every member, and
/// an `event` frame named after it (`message_edited`, `message_deleted`,
/// `reaction_changed`) with `conversation_id`, `seq` (the notice's) and
/// the notice's fields; members who can see the target also get it in its
/// current state as `message`.
async fn announce_message_change(bus: &dyn Bus, done: &MessageChangeOutcome) {
    let Some(notice) = &done.notice else {
        return;
    };
    let Some(said) = publish_notice(bus, notice, done.members.clone()).await else {
        return;
    };
    let others: Vec<UserId> = done
        .members
        .iter()
        .copied()
        .filter(|u| !done.viewers.contains(u))
        .collect();
    let (id, seq) = (notice.conversation_id, notice.seq);
    if !others.is_empty() {
        let event = said.clone().into_event(id, seq, None);
        crate::events::publish(bus, Arc::from(others), event).await;
    }
    let event = said.into_event(id, seq, Some(done.target.clone()));
    crate::events::publish(bus, done.viewers.clone(), event).await;
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
        skip_connection: origin,
        ..Delivery::to(users, priority, frame)
    };
    crate::events::send(bus, delivery).await;
}

async fn dispatch(
    bus: &dyn Bus,
    policy: &Policy,
    meta: JobMeta,
    op: WriteOp,
    outcome: WriteOutcome,
) {
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
                if m.kind == MessageKind::System {
                    // A notice written as a plain append (a call's history
                    // line) is announced like the others.
                    publish(bus, members.clone(), meta.origin, Priority::Message, frame).await;
                    if let Ok(said) = serde_json::from_str::<SystemNotice>(&m.body) {
                        let event = said.into_event(m.conversation_id, seq, None);
                        crate::events::publish(bus, members, event).await;
                    }
                } else {
                    publish(bus, members, meta.origin, Priority::Message, frame).await;
                }
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
        (op, WriteOutcome::CursorMoved { seq, members, kind }) => {
            let (user_id, conversation_id, receipt) = match &op {
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
                _ => return,
            };
            // Receipts fan out as far as they are useful: a read cursor to
            // everyone in direct chats and small groups, otherwise only to
            // the reader's own devices (their unread counts); a delivered
            // cursor only in direct chats.
            let direct = kind == ConversationKind::Direct;
            let audience: Option<Arc<[UserId]>> = match receipt {
                ReceiptKind::Read if direct || members.len() <= policy.receipts_max_group => {
                    Some(members.clone())
                }
                ReceiptKind::Read => Some(Arc::from(vec![user_id])),
                ReceiptKind::Delivered if direct => Some(members.clone()),
                ReceiptKind::Delivered => None,
            };
            if let Some(users) = audience {
                let frame = ServerFrame::Receipt {
                    conversation_id,
                    user_id,
                    kind: receipt,
                    seq,
                }
                .encode();
                publish(bus, users, meta.origin, Priority::Control, frame).await;
            }
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(WriteOutcome::CursorMoved { seq, members, kind }));
            }
        }
        (_, WriteOutcome::GroupChanged(done)) => {
            announce_group_change(bus, &done).await;
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(WriteOutcome::GroupChanged(done)));
            }
        }
        (_, WriteOutcome::MessageChanged(done)) => {
            announce_message_change(bus, &done).await;
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(WriteOutcome::MessageChanged(done)));
            }
        }
        (op, WriteOutcome::Rejected(code)) => {
            let refused = refusal(WriteKind::of(&op), code);
            reply_error(meta.reply, client_msg_id(&op), refused);
        }
        (_, outcome) => {
            if let ReplyTo::Waiter(tx) = meta.reply {
                let _ = tx.send(Ok(outcome));
            }
        }
    }
}
