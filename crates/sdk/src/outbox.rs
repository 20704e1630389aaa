//! The outbox: messages sent but not yet acked, kept in send order across
//! reconnects until the server acks them or rejects them for good.
//! Sans-IO: it hands out frames to write and never touches a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use confab_proto::{ClientFrame, ConversationId, MessageKind};
use serde_json::Value;
use tokio::time::Instant;

/// A message waiting for its ack.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutgoingMessage {
    /// Idempotency key: resending it never duplicates the message.
    pub client_msg_id: String,
    /// Target conversation.
    pub conversation_id: ConversationId,
    /// Kind.
    pub kind: MessageKind,
    /// Body.
    pub body: Value,
}

impl OutgoingMessage {
    /// The `send` frame for this message.
    pub fn frame(&self) -> ClientFrame {
        ClientFrame::Send {
            client_msg_id: self.client_msg_id.clone(),
            conversation_id: self.conversation_id,
            kind: self.kind,
            body: self.body.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not written on the current connection (or there is none).
    Queued,
    /// Written on the current connection; waiting for `ack` or `error`.
    InFlight,
    /// Refused with a retryable error; written again at this time.
    RetryAt(Instant),
}

#[derive(Debug)]
struct Entry<W> {
    msg: OutgoingMessage,
    state: State,
    /// Retryable refusals so far (drives the retry backoff).
    attempts: u32,
    /// Who waits for the outcome: usually one, more when the same
    /// `client_msg_id` was sent again while pending.
    waiters: Vec<W>,
}

/// Unacked messages in send order. `W` is whatever waits for an outcome
/// (the actor uses a reply channel; tests use `()`).
#[derive(Debug)]
pub(crate) struct Outbox<W> {
    /// Keyed by arrival number, so iteration is send order.
    entries: BTreeMap<u64, Entry<W>>,
    by_id: HashMap<String, u64>,
    /// Entries in `State::RetryAt`, by due time.
    retries: BTreeSet<(Instant, u64)>,
    next_key: u64,
}

impl<W> Default for Outbox<W> {
    fn default() -> Self {
        Outbox {
            entries: BTreeMap::new(),
            by_id: HashMap::new(),
            retries: BTreeSet::new(),
            next_key: 0,
        }
    }
}

impl<W> Outbox<W> {
    /// Adds a message. Returns true if it is new (the caller should write it
    /// now if connected, then call [`Outbox::mark_in_flight`]); false if a
    /// message with the same `client_msg_id` is already pending, in which
    /// case `waiter` shares its outcome.
    pub fn push(&mut self, msg: OutgoingMessage, waiter: W) -> bool {
        if let Some(entry) = self
            .by_id
            .get(&msg.client_msg_id)
            .and_then(|key| self.entries.get_mut(key))
        {
            entry.waiters.push(waiter);
            return false;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(msg.client_msg_id.clone(), key);
        let entry = Entry {
            msg,
            state: State::Queued,
            attempts: 0,
            waiters: vec![waiter],
        };
        self.entries.insert(key, entry);
        true
    }

    /// Records that a queued message was written on the current connection.
    pub fn mark_in_flight(&mut self, client_msg_id: &str) {
        if let Some(entry) = self.entry_mut(client_msg_id) {
            if entry.state == State::Queued {
                entry.state = State::InFlight;
            }
        }
    }

    /// A new connection is ready: every pending message, in send order, to
    /// be written again (retry timers are dropped: the reconnect was the wait).
    pub fn on_connected(&mut self) -> Vec<ClientFrame> {
        self.retries.clear();
        self.entries
            .values_mut()
            .map(|e| {
                e.state = State::InFlight;
                e.msg.frame()
            })
            .collect()
    }

    /// The connection was lost: nothing is in flight any more.
    pub fn on_disconnected(&mut self) {
        self.retries.clear();
        for e in self.entries.values_mut() {
            e.state = State::Queued;
        }
    }

    /// The server acked a message: removes it and returns it with its waiters
    /// (`None` for an unknown id, e.g. a repeated ack).
    pub fn ack(&mut self, client_msg_id: &str) -> Option<(OutgoingMessage, Vec<W>)> {
        self.remove(client_msg_id).map(|e| (e.msg, e.waiters))
    }

    /// The server refused a message for good: removes it and returns its waiters.
    pub fn fail(&mut self, client_msg_id: &str) -> Option<Vec<W>> {
        self.remove(client_msg_id).map(|e| e.waiters)
    }

    /// The server refused a message for now (rate limited, unavailable):
    /// keeps it, to be written again at `retry_at(attempts)`, where
    /// `attempts` counts earlier refusals. Returns false for an unknown id.
    pub fn defer(&mut self, client_msg_id: &str, retry_at: impl FnOnce(u32) -> Instant) -> bool {
        let Some(&key) = self.by_id.get(client_msg_id) else {
            return false;
        };
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        if let State::RetryAt(old) = entry.state {
            self.retries.remove(&(old, key));
        }
        let at = retry_at(entry.attempts);
        entry.attempts = entry.attempts.saturating_add(1);
        entry.state = State::RetryAt(at);
        self.retries.insert((at, key));
        true
    }

    /// When the earliest deferred message is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// Deferred messages due by `now`, in send order, now marked in flight.
    pub fn take_due(&mut self, now: Instant) -> Vec<ClientFrame> {
        let mut due: Vec<u64> = Vec::new();
        while let Some(&(at, key)) = self.retries.first() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            due.push(key);
        }
        due.sort_unstable();
        let mut frames = Vec::with_capacity(due.len());
        for key in due {
            if let Some(e) = self.entries.get_mut(&key) {
                e.state = State::InFlight;
                frames.push(e.msg.frame());
            }
        }
        frames
    }

    /// Empties the outbox (the connection is closing) and returns every waiter.
    pub fn drain(&mut self) -> Vec<W> {
        self.by_id.clear();
        self.retries.clear();
        std::mem::take(&mut self.entries)
            .into_values()
            .flat_map(|e| e.waiters)
            .collect()
    }

    /// Number of pending messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a message with this id is pending.
    pub fn contains(&self, client_msg_id: &str) -> bool {
        self.by_id.contains_key(client_msg_id)
    }

    fn entry_mut(&mut self, client_msg_id: &str) -> Option<&mut Entry<W>> {
        let key = self.by_id.get(client_msg_id)?;
        self.entries.get_mut(key)
    }

    fn remove(&mut self, client_msg_id: &str) -> Option<Entry<W>> {
        let key = self.by_id.remove(client_msg_id)?;
        let entry = self.entries.remove(&key)?;
        if let State::RetryAt(at) = entry.state {
            self.retries.remove(&(at, key));
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests;
