//! Calls: the rules of `call` signalling and the ephemeral state a node
//! keeps about the calls that touch it (rings, who is in a call, the ring
//! timeout, the one history line per call). Nothing here is stored but
//! that history line; a node that restarts forgets its calls.
//!
//! A node learns about a call from two places: the signals its own
//! connections send ([`Calls::signal`], called by the gateway) and the
//! signals the bus delivers to its users ([`Calls::delivered`], called by
//! the hub). The node where the caller sent `invite` owns the call: it
//! runs the ring timeout and writes the `call_ended` notice, so each call
//! has one owner and one notice (its `client_msg_id` is `call:<call_id>`,
//! so even a repeated write is a duplicate). The callee's node knows the
//! callee is in a call from the `accept` one of its connections sent, and
//! answers `busy` to an invite for them. docs/protocol.md ("Calls") says
//! what holds in a cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_bus::{Bus, ConnectionId, Delivery, Priority};
use confab_proto::frame::CallSignal;
use confab_proto::{
    ApiError, ConversationId, ErrorCode, MessageKind, ServerFrame, SystemNotice, UserId,
};
use confab_store::{NewMessage, Store, WriteOp};
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use crate::committer::Committer;
use crate::error::store_error;

/// Longest call id an `invite` may carry (the notice's `client_msg_id`
/// is `call:<call_id>`, at most 64 characters).
pub const MAX_CALL_ID: usize = 48;

/// One signal a local connection sent.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Who sent it.
    pub from: UserId,
    /// From which connection.
    pub connection: ConnectionId,
    /// The call.
    pub call_id: String,
    /// The call's conversation (required on `invite`).
    pub conversation_id: Option<ConversationId>,
    /// The other party.
    pub to: UserId,
    /// What it is.
    pub signal: CallSignal,
    /// Its payload.
    pub payload: Value,
}

/// A call placed from this node, which owns it.
struct Owned {
    caller: UserId,
    callee: UserId,
    conversation_id: ConversationId,
    media: String,
    caller_connection: ConnectionId,
    accepted_at: Option<Instant>,
    timer: Option<AbortHandle>,
}

/// A call a user of this node accepted on one of its connections.
struct Taken {
    callee: UserId,
    caller: UserId,
    conversation_id: Option<ConversationId>,
    connection: ConnectionId,
}

#[derive(Default)]
struct Registry {
    owned: HashMap<String, Owned>,
    taken: HashMap<String, Taken>,
    /// Users in an accepted call, as far as this node knows: the call id.
    in_call: HashMap<UserId, String>,
}

impl Registry {
    fn leave(&mut self, user: UserId, call_id: &str) {
        if self.in_call.get(&user).is_some_and(|c| c == call_id) {
            self.in_call.remove(&user);
        }
    }
}

/// How a call ended, for its notice.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Answered(Duration),
    Missed,
    Declined,
    Busy,
}

/// The calls this node knows about. Cheap to share (`Arc`).
pub struct Calls {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    committer: Committer,
    ring_timeout: Duration,
    max_payload_bytes: usize,
    registry: Mutex<Registry>,
}

fn bad(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

/// Checks an invite's call id: 1-48 characters of A-Z, a-z, 0-9, '-', '_'.
pub fn check_call_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CALL_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "call_id must be 1-48 characters of A-Z, a-z, 0-9, '-', '_' (use a uuid)",
        ))
    }
}

fn reason(payload: &Value) -> &str {
    payload.get("reason").and_then(Value::as_str).unwrap_or("")
}

impl Calls {
    /// An empty registry; unanswered invites end after `ring_timeout`.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        committer: Committer,
        ring_timeout: Duration,
        max_payload_bytes: usize,
    ) -> Arc<Calls> {
        Arc::new(Calls {
            store,
            bus,
            committer,
            ring_timeout,
            max_payload_bytes,
            registry: Mutex::new(Registry::default()),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node knows `user` to be in an accepted call.
    pub fn in_call(&self, user: UserId) -> bool {
        self.registry().in_call.contains_key(&user)
    }

    /// A signal from a local connection: checked (members of the call's
    /// conversation, no block, payload size), recorded, and relayed to the
    /// other party's devices. An `invite` to someone in a call is answered
    /// `busy` here and not relayed.
    pub async fn signal(self: &Arc<Self>, s: Signal) -> Result<(), ApiError> {
        let payload_bytes = serde_json::to_string(&s.payload).map_or(usize::MAX, |p| p.len());
        if let Some(conversation_id) = s.conversation_id {
            for user in [s.from, s.to] {
                let member = self
                    .store
                    .member(conversation_id, user)
                    .await
                    .map_err(store_error)?;
                if member.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "you can call only members of a conversation you are in",
                    ));
                }
            }
        }
        super::blocks::check_call(
            self.store.as_ref(),
            s.from,
            s.to,
            payload_bytes,
            self.max_payload_bytes,
        )
        .await?;
        match s.signal {
            CallSignal::Invite => return self.invite(s).await,
            CallSignal::Accept => {
                {
                    let mut reg = self.registry();
                    reg.in_call.insert(s.from, s.call_id.clone());
                    reg.taken.insert(
                        s.call_id.clone(),
                        Taken {
                            callee: s.from,
                            caller: s.to,
                            conversation_id: s.conversation_id,
                            connection: s.connection,
                        },
                    );
                }
                // The callee's other devices stop ringing.
                let stop = self.frame(
                    &s.call_id,
                    s.conversation_id,
                    s.from,
                    CallSignal::Cancel,
                    json!({"reason": "answered_elsewhere"}),
                );
                self.send(s.from, Some(s.connection), stop).await;
            }
            CallSignal::Cancel => {
                let owned = self.take_owned(&s.call_id, |o| {
                    o.caller == s.from && o.accepted_at.is_none()
                });
                if let Some(o) = owned {
                    self.finish(&s.call_id, o, Outcome::Missed);
                }
            }
            CallSignal::Hangup => self.hung_up(&s.call_id, s.from, s.to),
            _ => {}
        }
        let frame = self.frame(&s.call_id, s.conversation_id, s.from, s.signal, s.payload);
        self.send(s.to, None, frame).await;
        Ok(())
    }

    async fn invite(self: &Arc<Self>, s: Signal) -> Result<(), ApiError> {
        check_call_id(&s.call_id)?;
        let conversation_id = s
            .conversation_id
            .ok_or_else(|| bad("an invite needs the call's conversation_id"))?;
        let media = match s.payload.get("media").and_then(Value::as_str) {
            Some(m @ ("audio" | "video")) => m.to_owned(),
            _ => {
                return Err(bad(
                    "an invite's payload must say media: \"audio\" or \"video\"",
                ))
            }
        };
        let mut call = Owned {
            caller: s.from,
            callee: s.to,
            conversation_id,
            media,
            caller_connection: s.connection,
            accepted_at: None,
            timer: None,
        };
        let callee_busy = {
            let reg = self.registry();
            if reg.owned.contains_key(&s.call_id) || reg.taken.contains_key(&s.call_id) {
                return Err(bad("this call_id is in use; pick a new one for each call"));
            }
            reg.in_call.contains_key(&s.to)
        };
        if callee_busy {
            let busy = self.frame(
                &s.call_id,
                Some(conversation_id),
                s.to,
                CallSignal::Busy,
                Value::Null,
            );
            self.send(s.from, None, busy).await;
            self.finish(&s.call_id, call, Outcome::Busy);
            return Ok(());
        }
        // Weak: a ringing call must not keep the registry (and with it the
        // commit queue) alive through a shutdown.
        let me = Arc::downgrade(self);
        let id = s.call_id.clone();
        let timeout = self.ring_timeout;
        call.timer = Some(
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(me) = me.upgrade() {
                    me.ring_timed_out(&id).await;
                }
            })
            .abort_handle(),
        );
        self.registry().owned.insert(s.call_id.clone(), call);
        let frame = self.frame(
            &s.call_id,
            Some(conversation_id),
            s.from,
            CallSignal::Invite,
            s.payload,
        );
        self.send(s.to, None, frame).await;
        Ok(())
    }

    /// A call frame the bus delivers to `user`, who has connections here;
    /// false: do not hand it to them (an invite while they are in a call,
    /// answered `busy` instead).
    pub fn delivered(self: &Arc<Self>, user: UserId, frame: &ServerFrame) -> bool {
        let ServerFrame::Call {
            call_id,
            conversation_id,
            from_user_id,
            signal,
            payload,
        } = frame
        else {
            return true;
        };
        let (from, conversation_id) = (*from_user_id, *conversation_id);
        match signal {
            CallSignal::Invite => {
                let reg = self.registry();
                let busy = reg.in_call.get(&user).is_some_and(|c| c != call_id);
                drop(reg);
                if busy {
                    let frame = self.frame(
                        call_id,
                        conversation_id,
                        user,
                        CallSignal::Busy,
                        Value::Null,
                    );
                    self.send_later(from, frame);
                    return false;
                }
            }
            CallSignal::Accept => {
                let mut reg = self.registry();
                if let Some(o) = reg.owned.get_mut(call_id) {
                    if o.caller == user && o.callee == from && o.accepted_at.is_none() {
                        o.accepted_at = Some(Instant::now());
                        if let Some(t) = o.timer.take() {
                            t.abort();
                        }
                        reg.in_call.insert(user, call_id.clone());
                    }
                }
            }
            CallSignal::Decline | CallSignal::Busy => {
                let owned = self.take_owned(call_id, |o| {
                    o.caller == user && o.callee == from && o.accepted_at.is_none()
                });
                if let Some(o) = owned {
                    let (outcome, why) = if *signal == CallSignal::Decline {
                        (Outcome::Declined, "declined")
                    } else {
                        (Outcome::Busy, "busy")
                    };
                    // The callee's other devices stop ringing.
                    let stop = self.frame(
                        call_id,
                        Some(o.conversation_id),
                        o.caller,
                        CallSignal::Cancel,
                        json!({ "reason": why }),
                    );
                    self.send_later(o.callee, stop);
                    self.finish(call_id, o, outcome);
                }
            }
            CallSignal::Hangup => self.hung_up(call_id, from, user),
            CallSignal::Cancel if reason(payload) != "answered_elsewhere" => {
                let mut reg = self.registry();
                if reg.taken.get(call_id).is_some_and(|t| t.callee == user) {
                    reg.taken.remove(call_id);
                    reg.leave(user, call_id);
                }
            }
            _ => {}
        }
        true
    }

    /// `from` hung up on `to` in `call_id` (sent here, or delivered here).
    /// Only the call's own two parties end it: in a group call other
    /// members signal on a member's call id too (docs/protocol.md).
    fn hung_up(self: &Arc<Self>, call_id: &str, from: UserId, to: UserId) {
        let pair = |a: UserId, b: UserId| (a == from && b == to) || (a == to && b == from);
        let owned = self.take_owned(call_id, |o| pair(o.caller, o.callee));
        {
            let mut reg = self.registry();
            if reg
                .taken
                .get(call_id)
                .is_some_and(|t| pair(t.callee, t.caller))
            {
                reg.taken.remove(call_id);
                reg.leave(from, call_id);
                reg.leave(to, call_id);
            }
        }
        if let Some(o) = owned {
            let outcome = match o.accepted_at {
                Some(at) => Outcome::Answered(at.elapsed()),
                None => Outcome::Missed,
            };
            self.finish(call_id, o, outcome);
        }
    }

    /// A connection closed: its calls end as if it had hung up (ringing
    /// ones are cancelled).
    pub async fn connection_closed(self: &Arc<Self>, user: UserId, connection: ConnectionId) {
        let (owned, taken) = {
            let mut reg = self.registry();
            let owned: Vec<String> = reg
                .owned
                .iter()
                .filter(|(_, o)| o.caller == user && o.caller_connection == connection)
                .map(|(id, _)| id.clone())
                .collect();
            let taken: Vec<(String, Taken)> = {
                let ids: Vec<String> = reg
                    .taken
                    .iter()
                    .filter(|(_, t)| t.callee == user && t.connection == connection)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|id| reg.taken.remove(&id).map(|t| (id, t)))
                    .collect()
            };
            for (id, _) in &taken {
                reg.leave(user, id);
            }
            (owned, taken)
        };
        for id in owned {
            if let Some(o) = self.take_owned(&id, |_| true) {
                let (signal, payload, outcome) = match o.accepted_at {
                    Some(at) => (
                        CallSignal::Hangup,
                        Value::Null,
                        Outcome::Answered(at.elapsed()),
                    ),
                    None => (
                        CallSignal::Cancel,
                        json!({"reason": "cancelled"}),
                        Outcome::Missed,
                    ),
                };
                let frame = self.frame(&id, Some(o.conversation_id), user, signal, payload);
                self.send(o.callee, None, frame).await;
                self.finish(&id, o, outcome);
            }
        }
        for (id, t) in taken {
            let frame = self.frame(
                &id,
                t.conversation_id,
                user,
                CallSignal::Hangup,
                Value::Null,
            );
            self.send(t.caller, None, frame).await;
        }
    }

    async fn ring_timed_out(self: &Arc<Self>, call_id: &str) {
        let Some(o) = self.take_owned(call_id, |o| o.accepted_at.is_none()) else {
            return;
        };
        let stop = self.frame(
            call_id,
            Some(o.conversation_id),
            o.caller,
            CallSignal::Cancel,
            json!({"reason": "timeout"}),
        );
        self.send(o.callee, None, stop).await;
        // The caller hears it from the callee's side.
        let stop = self.frame(
            call_id,
            Some(o.conversation_id),
            o.callee,
            CallSignal::Cancel,
            json!({"reason": "timeout"}),
        );
        self.send(o.caller, None, stop).await;
        self.finish(call_id, o, Outcome::Missed);
    }

    /// Removes an owned call if `pick` accepts it, stopping its timer.
    fn take_owned(&self, call_id: &str, pick: impl Fn(&Owned) -> bool) -> Option<Owned> {
        let mut reg = self.registry();
        if !reg.owned.get(call_id).is_some_and(pick) {
            return None;
        }
        let mut o = reg.owned.remove(call_id)?;
        if let Some(t) = o.timer.take() {
            t.abort();
        }
        if o.accepted_at.is_some() {
            reg.leave(o.caller, call_id);
        }
        Some(o)
    }

    /// Writes the call's one `call_ended` notice (in the background).
    fn finish(&self, call_id: &str, o: Owned, outcome: Outcome) {
        let (outcome, duration) = match outcome {
            Outcome::Answered(d) => ("answered", d),
            Outcome::Missed => ("missed", Duration::ZERO),
            Outcome::Declined => ("declined", Duration::ZERO),
            Outcome::Busy => ("busy", Duration::ZERO),
        };
        let notice = SystemNotice::CallEnded {
            call_id: call_id.to_owned(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            media: o.media,
            outcome: outcome.to_owned(),
        };
        let msg = NewMessage {
            conversation_id: o.conversation_id,
            sender_id: o.caller,
            client_msg_id: format!("call:{call_id}"),
            kind: MessageKind::System,
            body: notice.to_body().to_string(),
            ts: 0,
            mentions: Vec::new(),
        };
        let committer = self.committer.clone();
        tokio::spawn(async move {
            if let Err(e) = committer.commit(WriteOp::Append(msg)).await {
                tracing::warn!(error = %e, "could not write a call's history line");
            }
        });
    }

    fn frame(
        &self,
        call_id: &str,
        conversation_id: Option<ConversationId>,
        from: UserId,
        signal: CallSignal,
        payload: Value,
    ) -> ServerFrame {
        ServerFrame::Call {
            call_id: call_id.to_owned(),
            conversation_id,
            from_user_id: from,
            signal,
            payload,
        }
    }

    /// Publishes `frame` to `to`'s devices, in order with the signals
    /// around it.
    async fn send(&self, to: UserId, skip_connection: Option<ConnectionId>, frame: ServerFrame) {
        let delivery = Delivery {
            skip_connection,
            ..Delivery::to(Arc::from(vec![to]), Priority::Control, frame.encode())
        };
        crate::events::send(self.bus.as_ref(), delivery).await;
    }

    /// Publishes `frame` to `to`'s devices in the background: this runs
    /// inside a bus delivery, which must not wait.
    fn send_later(&self, to: UserId, frame: ServerFrame) {
        let delivery = Delivery::to(Arc::from(vec![to]), Priority::Control, frame.encode());
        let bus = self.bus.clone();
        tokio::spawn(async move { crate::events::send(bus.as_ref(), delivery).await });
    }
}
