//! A connection's outbound queue: control frames before messages before bulk
//! sync, bounded in frames and bytes.
//!
//! Live traffic (control, messages) is pushed by other tasks and must never
//! wait, so when it would overflow the bound the connection is marked too
//! slow and closed: the client reconnects and resyncs from its cursors, so
//! nothing is lost. Bulk traffic is produced by this connection's own sync
//! task, which instead waits for room ([`Outbound::push_bulk`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use confab_bus::Priority;
use tokio::sync::Notify;

/// Why a queue stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The consumer fell too far behind.
    TooSlow,
    /// The connection is gone.
    Gone,
    /// The device was logged out: the connection must close.
    Revoked,
    /// Live deliveries may have been missed (the bus was disconnected): the
    /// client must reconnect and sync.
    Resync,
}

struct State {
    control: VecDeque<Bytes>,
    message: VecDeque<Bytes>,
    bulk: VecDeque<Bytes>,
    frames: usize,
    bytes: usize,
    closed: Option<Closed>,
}

/// The queue. Shared (in an `Arc`) between the connection's task, the hub
/// and the committer.
pub struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer.
    ready: Notify,
    /// Wakes a bulk producer waiting for room.
    room: Notify,
    max_frames: usize,
    max_bytes: usize,
    max_bulk_frames: usize,
}

impl Outbound {
    /// An empty queue with these bounds.
    pub fn new(max_frames: usize, max_bytes: usize) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                control: VecDeque::new(),
                message: VecDeque::new(),
                bulk: VecDeque::new(),
                frames: 0,
                bytes: 0,
                closed: None,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            max_frames,
            max_bytes,
            max_bulk_frames: (max_frames / 4).max(16),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queues
        // inconsistent (each operation is a push or pop), so poisoning is
        // ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a live frame. Never waits. On overflow the queue closes as
    /// [`Closed::TooSlow`] and the frame is refused.
    pub fn push(&self, priority: Priority, frame: Bytes) -> Result<(), Closed> {
        let mut s = self.lock();
        if let Some(c) = s.closed {
            return Err(c);
        }
        if s.frames >= self.max_frames || s.bytes + frame.len() > self.max_bytes {
            s.closed = Some(Closed::TooSlow);
            drop(s);
            self.ready.notify_one();
            self.room.notify_waiters();
            return Err(Closed::TooSlow);
        }
        s.frames += 1;
        s.bytes += frame.len();
        match priority {
            Priority::Control => s.control.push_back(frame),
            Priority::Message => s.message.push_back(frame),
            Priority::Bulk => s.bulk.push_back(frame),
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a bulk frame, waiting while the bulk share of the queue is full.
    pub async fn push_bulk(&self, frame: Bytes) -> Result<(), Closed> {
        loop {
            let room = self.room.notified();
            {
                let mut s = self.lock();
                if let Some(c) = s.closed {
                    return Err(c);
                }
                if s.bulk.len() < self.max_bulk_frames {
                    s.frames += 1;
                    s.bytes += frame.len();
                    s.bulk.push_back(frame);
                    drop(s);
                    self.ready.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Takes the most urgent frame, if any.
    pub fn pop(&self) -> Option<Bytes> {
        let mut s = self.lock();
        let (frame, bulk) = if let Some(f) = s.control.pop_front() {
            (f, false)
        } else if let Some(f) = s.message.pop_front() {
            (f, false)
        } else {
            (s.bulk.pop_front()?, true)
        };
        s.frames -= 1;
        s.bytes -= frame.len();
        drop(s);
        if bulk {
            self.room.notify_waiters();
        }
        Some(frame)
    }

    /// Why the queue is closed, if it is.
    pub fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// Marks the connection gone: producers stop, waiting bulk pushes end.
    pub fn close(&self) {
        self.shut(Closed::Gone);
    }

    /// Ends the connection because its device was logged out: pending
    /// frames are dropped and the connection's task closes the socket.
    pub fn revoke(&self) {
        self.shut(Closed::Revoked);
    }

    /// Ends the connection so the client reconnects and syncs, because
    /// live deliveries may have been lost on the way (a bus outage).
    pub fn resync(&self) {
        self.shut(Closed::Resync);
    }

    /// Closes the queue for `reason` (unless already closed), drops what is
    /// queued and wakes the writer and any waiting bulk producer.
    fn shut(&self, reason: Closed) {
        let mut s = self.lock();
        s.closed.get_or_insert(reason);
        s.control.clear();
        s.message.clear();
        s.bulk.clear();
        s.frames = 0;
        s.bytes = 0;
        drop(s);
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Makes the next [`Outbound::wait_ready`] return at once (the writer
    /// stopped with frames left).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Waits until something was pushed (or the queue closed).
    pub async fn wait_ready(&self) {
        self.ready.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn control_before_message_before_bulk() {
        let q = Outbound::new(100, 1000);
        q.push(Priority::Bulk, b("bulk1")).expect("push");
        q.push(Priority::Message, b("msg1")).expect("push");
        q.push(Priority::Control, b("ack1")).expect("push");
        q.push(Priority::Message, b("msg2")).expect("push");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![b("ack1"), b("msg1"), b("msg2"), b("bulk1")]);
    }

    #[test]
    fn overflow_closes_as_too_slow() {
        let q = Outbound::new(2, 1000);
        q.push(Priority::Message, b("1")).expect("push");
        q.push(Priority::Message, b("2")).expect("push");
        assert_eq!(q.push(Priority::Control, b("3")), Err(Closed::TooSlow));
        assert_eq!(q.closed(), Some(Closed::TooSlow));
        assert_eq!(q.push(Priority::Control, b("4")), Err(Closed::TooSlow));
    }

    #[test]
    fn byte_bound_counts_too() {
        let q = Outbound::new(100, 5);
        q.push(Priority::Message, b("abc")).expect("push");
        assert_eq!(q.push(Priority::Message, b("abc")), Err(Closed::TooSlow));
    }

    #[tokio::test]
    async fn bulk_waits_for_room_instead_of_failing() {
        let q = std::sync::Arc::new(Outbound::new(64, 1 << 20));
        for _ in 0..16 {
            q.push_bulk(b("x")).await.expect("room");
        }
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push_bulk(b("y")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(q.pop().is_some());
        waiter.await.expect("join").expect("pushed after room");
        q.close();
        assert_eq!(q.push_bulk(b("z")).await, Err(Closed::Gone));
    }

    #[test]
    fn revoke_drops_the_queue_and_keeps_the_first_reason() {
        let q = Outbound::new(8, 1000);
        q.push(Priority::Message, b("m")).expect("push");
        q.revoke();
        assert!(q.pop().is_none());
        assert_eq!(q.closed(), Some(Closed::Revoked));
        q.close();
        assert_eq!(q.closed(), Some(Closed::Revoked), "first reason wins");
        assert_eq!(q.push(Priority::Control, b("x")), Err(Closed::Revoked));
    }
}
