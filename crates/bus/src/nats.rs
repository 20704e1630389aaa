//! The NATS backend of the [`Bus`]: nodes of a cluster exchange deliveries
//! through a NATS server (core NATS, no JetStream), routed by interest.
//!
//! # Subjects
//!
//! - `confab.u.<user_id>`: a node subscribes while it holds at least one
//!   connection of the user ([`Bus::set_interest`]), so NATS routes each
//!   user's traffic only to the nodes that hold that user. A delivery to at
//!   most [`FANOUT_PER_USER_MAX`] users is published once per recipient on
//!   these subjects (except the subject of `skip_user`, none of whose
//!   connections would take it).
//! - `confab.fanout` ([`FANOUT_SUBJECT`]): every node subscribes. A delivery
//!   to more users (a large group) is published **once** here, carrying its
//!   user list; every node receives it and hands its own (interested) users
//!   among them to the sink. One publish per commit instead of hundreds, at
//!   the price of every node reading (and discarding most of) the list.
//!
//! The publishing node receives its own messages like any other node
//! (echo is on): local recipients go through NATS too, so a node's users
//! see one order whatever node published.
//!
//! # Payload
//!
//! A compact binary prefix, then the encoded frame bytes unchanged
//! ([`Delivery::frame`]; the receiver slices them out without copying).
//! All integers big-endian:
//!
//! ```text
//! u8  magic 0xCF
//! u8  version 1
//! u8  priority        0 Control, 1 Message, 2 Bulk
//! u8  flags           bit 0 skip_user, bit 1 skip_connection, bit 2 user list
//! [i64 skip_user]      if bit 0
//! [u64 skip_connection] if bit 1
//! [u32 n, n × i64 users] if bit 2 (fan-out subject only)
//! frame bytes          the rest
//! ```
//!
//! A message that does not decode (wrong magic or version, unknown flags,
//! truncated, a user list on a user subject, none on the fan-out subject) is
//! logged and dropped; nothing on the wire can make a node panic.
//!
//! # Ordering
//!
//! One NATS connection per node and a fair lock around each delivery's
//! publishes: messages leave in the order `publish` was called, and NATS
//! keeps that order per subject. Each subscription is drained by one task,
//! so each subject is delivered to the sink in the order received. Order
//! *across* subjects (a user's `confab.u.<id>` messages versus fan-out
//! messages that include them) is not guaranteed: a conversation keeps one
//! path while its audience stays on one side of [`FANOUT_PER_USER_MAX`].
//!
//! # Outages
//!
//! The client reconnects forever with a short backoff and restores every
//! subscription. While disconnected, publishes wait in the client's command
//! buffer ([`NatsBusOptions::client_capacity`] commands) and go out after the
//! reconnect; once it is full `publish` fails at once with
//! [`BusError::Unavailable`] rather than stall the caller. Anything in
//! flight when the connection dropped may be lost, so [`NatsBus::reconnects`]
//! tells the server to have its clients resync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, Message, Subscriber};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use confab_proto::UserId;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::{Bus, BusError, ConnectionId, Delivery, DeliverySink, Priority};

/// Deliveries to at most this many users are published once per user on
/// `confab.u.<user>`; larger ones once on [`FANOUT_SUBJECT`].
pub const FANOUT_PER_USER_MAX: usize = 64;

/// The broadcast subject every node subscribes to.
pub const FANOUT_SUBJECT: &str = "confab.fanout";

const USER_SUBJECT_PREFIX: &str = "confab.u.";

/// Nobody subscribes: requests to it measure a round trip.
const BARRIER_SUBJECT: &str = "confab.barrier";

/// The subject carrying `user`'s deliveries.
pub fn user_subject(user: UserId) -> String {
    format!("{USER_SUBJECT_PREFIX}{user}")
}

/// Tuning of a [`NatsBus`].
#[derive(Debug, Clone)]
pub struct NatsBusOptions {
    /// Deliveries to more users than this go out once on the fan-out
    /// subject.
    pub fanout_per_user_max: usize,
    /// How long `publish` (and `set_interest`) may wait for room in the
    /// client's command buffer while connected (backpressure). While
    /// disconnected they never wait.
    pub publish_timeout: Duration,
    /// Longest pause between two reconnect attempts (the backoff grows
    /// by 100 ms per attempt up to this).
    pub reconnect_delay_max: Duration,
    /// Commands (publishes, subscriptions) the client buffers; what
    /// survives a short outage.
    pub client_capacity: usize,
    /// Interval of client pings; a dead connection is noticed after about
    /// three of them.
    pub ping_interval: Duration,
}

impl Default for NatsBusOptions {
    fn default() -> Self {
        NatsBusOptions {
            fanout_per_user_max: FANOUT_PER_USER_MAX,
            publish_timeout: Duration::from_secs(2),
            reconnect_delay_max: Duration::from_secs(1),
            client_capacity: 8192,
            ping_interval: Duration::from_secs(10),
        }
    }
}

/// A [`Bus`] over NATS. See the module docs for subjects, payload format
/// and behaviour during outages.
pub struct NatsBus {
    inner: Arc<Inner>,
    tasks: Vec<AbortHandle>,
}

struct Inner {
    client: Client,
    node_id: String,
    options: NatsBusOptions,
    sink: OnceLock<Arc<dyn DeliverySink>>,
    /// Users this node is interested in, with their subscription.
    interest: RwLock<HashMap<UserId, Interest>>,
    /// Serialises subscription changes (they await the client).
    interest_lock: tokio::sync::Mutex<()>,
    next_generation: AtomicU64,
    /// Fair lock: a delivery's publishes go out together, in call order.
    publish_lock: tokio::sync::Mutex<()>,
    reconnects: watch::Sender<u64>,
}

struct Interest {
    /// Identifies the subscription task allowed to deliver for the user.
    generation: u64,
    /// The subscription's task; none while the subscription could not be
    /// made (retried on the next (re)connect).
    task: Option<AbortHandle>,
}

impl NatsBus {
    /// Connects with default options. Returns at once: the connection is
    /// made (and remade) in the background; [`Bus::is_ready`] tells when it
    /// is up.
    pub async fn connect(url: &str, node_id: &str) -> Result<NatsBus, BusError> {
        NatsBus::connect_with(url, node_id, NatsBusOptions::default()).await
    }

    /// Connects with `options`.
    pub async fn connect_with(
        url: &str,
        node_id: &str,
        options: NatsBusOptions,
    ) -> Result<NatsBus, BusError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let delay_max = options.reconnect_delay_max;
        let client = ConnectOptions::new()
            .name(format!("confab-bus {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                let step = Duration::from_millis(100).saturating_mul(attempts as u32);
                step.min(delay_max)
            })
            .client_capacity(options.client_capacity)
            .ping_interval(options.ping_interval)
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(format!("nats connect {url}: {e}")))?;

        let fanout = client
            .subscribe(FANOUT_SUBJECT)
            .await
            .map_err(|e| BusError::Unavailable(format!("nats subscribe: {e}")))?;

        let inner = Arc::new(Inner {
            client,
            node_id: node_id.to_owned(),
            options,
            sink: OnceLock::new(),
            interest: RwLock::new(HashMap::new()),
            interest_lock: tokio::sync::Mutex::new(()),
            next_generation: AtomicU64::new(1),
            publish_lock: tokio::sync::Mutex::new(()),
            reconnects: watch::channel(0).0,
        });
        let fanout_task = tokio::spawn(run_fanout(Arc::downgrade(&inner), fanout));
        let events_task = tokio::spawn(run_events(Arc::downgrade(&inner), events_rx));
        Ok(NatsBus {
            inner,
            tasks: vec![fanout_task.abort_handle(), events_task.abort_handle()],
        })
    }

    /// Counts reconnections after an outage (0 until the first one). Live
    /// deliveries may have been lost while disconnected: on a change, the
    /// server should make its local clients resync.
    pub fn reconnects(&self) -> watch::Receiver<u64> {
        self.inner.reconnects.subscribe()
    }

    /// The underlying client, e.g. to share the connection with
    /// [`crate::NatsPresence`].
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// This node's id, as given to [`NatsBus::connect`].
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Waits until the NATS server has processed everything this node sent
    /// before (publishes, subscriptions): one round trip. Fails when
    /// disconnected or after [`NatsBusOptions::publish_timeout`].
    pub async fn barrier(&self) -> Result<(), BusError> {
        self.inner.barrier().await
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let interest = self
            .inner
            .interest
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for i in interest.values() {
            if let Some(t) = &i.task {
                t.abort();
            }
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    fn attach(&self, sink: Arc<dyn DeliverySink>) {
        // A second attach is a programming error; keep the first sink.
        let _ = self.inner.sink.set(sink);
    }

    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        self.inner.publish(&delivery).await
    }

    /// Subscribing waits for a round trip to the NATS server (outside any
    /// lock), so deliveries published by any node after this returns `Ok`
    /// reach this node. An `Err` leaves the interest recorded: the
    /// subscription is made on the next (re)connect. After
    /// `set_interest(user, false)` returns, nothing more is delivered for
    /// `user`, on either subject. Calls are idempotent (state, not count).
    async fn set_interest(&self, user: UserId, interested: bool) -> Result<(), BusError> {
        if interested {
            Inner::subscribe_user(&self.inner, user).await?;
            self.inner.barrier().await
        } else {
            self.inner.unsubscribe_user(user).await;
            Ok(())
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }
}

impl Inner {
    fn interest_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<UserId, Interest>> {
        self.interest.read().unwrap_or_else(|p| p.into_inner())
    }

    fn interest_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<UserId, Interest>> {
        self.interest.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a client command may wait for buffer room right now.
    fn command_wait(&self) -> Duration {
        if self.client.connection_state() == State::Connected {
            self.options.publish_timeout
        } else {
            Duration::ZERO
        }
    }

    async fn barrier(&self) -> Result<(), BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("nats disconnected".into()));
        }
        // A request nobody answers: the server replies "no responders"
        // after processing everything sent before it on this connection.
        let request = self.client.request(BARRIER_SUBJECT, Bytes::new());
        match tokio::time::timeout(self.options.publish_timeout, request).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!("nats round trip: {e}"))),
            Err(_) => Err(BusError::Unavailable("nats round trip timed out".into())),
        }
    }

    async fn publish(&self, d: &Delivery) -> Result<(), BusError> {
        let fanout = d.users.len() > self.options.fanout_per_user_max;
        let payload = encode(d, fanout);
        let _order = self.publish_lock.lock().await;
        if fanout {
            return self.send(FANOUT_SUBJECT.to_owned(), payload).await;
        }
        for &user in d.users.iter() {
            if d.skip_user == Some(user) {
                continue; // none of that user's connections would take it
            }
            self.send(user_subject(user), payload.clone()).await?;
        }
        Ok(())
    }

    async fn send(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        // `timeout` polls the publish first: with room in the buffer it
        // succeeds even with a zero wait.
        match tokio::time::timeout(self.command_wait(), self.client.publish(subject, payload)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unavailable(format!("nats publish: {e}"))),
            Err(_) => Err(BusError::Unavailable(
                "nats client buffer full (disconnected or overloaded)".into(),
            )),
        }
    }

    async fn subscribe_user(this: &Arc<Inner>, user: UserId) -> Result<(), BusError> {
        let _g = this.interest_lock.lock().await;
        let generation = {
            let mut interest = this.interest_write();
            if interest.get(&user).is_some_and(|i| i.task.is_some()) {
                return Ok(());
            }
            let generation = this.next_generation.fetch_add(1, Ordering::Relaxed);
            // Recorded before subscribing: fan-out deliveries reach the user
            // at once, and a failed subscription is retried on reconnect.
            interest.insert(
                user,
                Interest {
                    generation,
                    task: None,
                },
            );
            generation
        };
        Inner::try_subscribe(this, user, generation).await
    }

    /// Subscribes to the user's subject and starts its task. Caller holds
    /// `interest_lock`.
    async fn try_subscribe(
        this: &Arc<Inner>,
        user: UserId,
        generation: u64,
    ) -> Result<(), BusError> {
        let subscribe = this.client.subscribe(user_subject(user));
        let sub = match tokio::time::timeout(this.command_wait(), subscribe).await {
            Ok(Ok(sub)) => sub,
            Ok(Err(e)) => {
                return Err(BusError::Unavailable(format!(
                    "nats subscribe (retried on reconnect): {e}"
                )))
            }
            Err(_) => {
                return Err(BusError::Unavailable(
                    "nats client buffer full; subscription retried on reconnect".into(),
                ))
            }
        };
        let task = tokio::spawn(run_user(Arc::downgrade(this), user, generation, sub));
        let mut interest = this.interest_write();
        match interest.get_mut(&user) {
            Some(i) if i.generation == generation => i.task = Some(task.abort_handle()),
            _ => task.abort(),
        }
        Ok(())
    }

    async fn unsubscribe_user(&self, user: UserId) {
        let _g = self.interest_lock.lock().await;
        if let Some(i) = self.interest_write().remove(&user) {
            if let Some(t) = i.task {
                // Dropping the subscriber unsubscribes; the generation check
                // stops anything already received from being delivered.
                t.abort();
            }
        }
    }

    /// Retries the subscriptions that could not be made.
    async fn restore_pending(this: &Arc<Inner>) {
        let _g = this.interest_lock.lock().await;
        let pending: Vec<(UserId, u64)> = this
            .interest_read()
            .iter()
            .filter(|(_, i)| i.task.is_none())
            .map(|(&u, i)| (u, i.generation))
            .collect();
        for (user, generation) in pending {
            if let Err(e) = Inner::try_subscribe(this, user, generation).await {
                tracing::warn!(error = %e, user, "could not restore subscription");
            }
        }
    }

    fn sink(&self) -> Option<&Arc<dyn DeliverySink>> {
        let sink = self.sink.get();
        if sink.is_none() {
            tracing::debug!("bus delivery before a sink was attached; dropped");
        }
        sink
    }

    fn on_user_message(&self, user: UserId, generation: u64, msg: Message) {
        let Some(sink) = self.sink() else { return };
        let decoded = match decode(msg.payload) {
            Ok(d) if d.users.is_none() => d,
            Ok(_) => {
                tracing::warn!(subject = %msg.subject, "user list on a user subject; dropped");
                return;
            }
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = e, "undecodable bus message; dropped");
                return;
            }
        };
        let current = self.interest_read().get(&user).map(|i| i.generation);
        if current != Some(generation) {
            return; // interest dropped (or renewed) since this was received
        }
        sink.deliver(&decoded.into_delivery(Arc::from([user])));
    }

    fn on_fanout_message(&self, msg: Message) {
        let Some(sink) = self.sink() else { return };
        let mut decoded = match decode(msg.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = e, "undecodable fan-out message; dropped");
                return;
            }
        };
        let Some(users) = decoded.users.take() else {
            tracing::warn!("fan-out message without a user list; dropped");
            return;
        };
        let local: Vec<UserId> = {
            let interest = self.interest_read();
            users
                .into_iter()
                .filter(|u| interest.contains_key(u))
                .collect()
        };
        if local.is_empty() {
            return;
        }
        sink.deliver(&decoded.into_delivery(Arc::from(local)));
    }
}

async fn run_user(inner: Weak<Inner>, user: UserId, generation: u64, mut sub: Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.on_user_message(user, generation, msg);
    }
}

async fn run_fanout(inner: Weak<Inner>, mut sub: Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.on_fanout_message(msg);
    }
}

async fn run_events(inner: Weak<Inner>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut connects: u64 = 0;
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Event::Connected => {
                connects += 1;
                if connects > 1 {
                    // Counted from connects rather than disconnects: the
                    // client may drop events, but every connect after the
                    // first is a reconnect.
                    inner.reconnects.send_modify(|n| *n += 1);
                    tracing::info!(node = %inner.node_id, "bus reconnected to NATS");
                }
                Inner::restore_pending(&inner).await;
            }
            Event::Disconnected => {
                tracing::warn!(node = %inner.node_id, "bus disconnected from NATS");
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(sid, "bus subscription overflowed; messages dropped");
            }
            other => tracing::debug!(event = %other, "nats event"),
        }
    }
}

const MAGIC: u8 = 0xCF;
const VERSION: u8 = 1;
const FLAG_SKIP_USER: u8 = 1;
const FLAG_SKIP_CONNECTION: u8 = 2;
const FLAG_USERS: u8 = 4;

/// A decoded bus message.
#[derive(Debug, PartialEq)]
struct Decoded {
    priority: Priority,
    skip_user: Option<UserId>,
    skip_connection: Option<ConnectionId>,
    users: Option<Vec<UserId>>,
    frame: Bytes,
}

impl Decoded {
    fn into_delivery(self, users: Arc<[UserId]>) -> Delivery {
        Delivery {
            users,
            skip_user: self.skip_user,
            skip_connection: self.skip_connection,
            priority: self.priority,
            frame: self.frame,
        }
    }
}

fn encode(d: &Delivery, with_users: bool) -> Bytes {
    let users_len = if with_users { 4 + 8 * d.users.len() } else { 0 };
    let mut b = BytesMut::with_capacity(4 + 16 + users_len + d.frame.len());
    let mut flags = 0;
    if d.skip_user.is_some() {
        flags |= FLAG_SKIP_USER;
    }
    if d.skip_connection.is_some() {
        flags |= FLAG_SKIP_CONNECTION;
    }
    if with_users {
        flags |= FLAG_USERS;
    }
    b.put_u8(MAGIC);
    b.put_u8(VERSION);
    b.put_u8(match d.priority {
        Priority::Control => 0,
        Priority::Message => 1,
        Priority::Bulk => 2,
    });
    b.put_u8(flags);
    if let Some(u) = d.skip_user {
        b.put_i64(u);
    }
    if let Some(c) = d.skip_connection {
        b.put_u64(c);
    }
    if with_users {
        // Above u32::MAX users the payload would exceed any NATS limit
        // anyway; the publish fails on max_payload.
        b.put_u32(u32::try_from(d.users.len()).unwrap_or(u32::MAX));
        for &u in d.users.iter() {
            b.put_i64(u);
        }
    }
    b.extend_from_slice(&d.frame);
    b.freeze()
}

fn decode(mut b: Bytes) -> Result<Decoded, &'static str> {
    if b.remaining() < 4 {
        return Err("truncated header");
    }
    if b.get_u8() != MAGIC {
        return Err("bad magic");
    }
    if b.get_u8() != VERSION {
        return Err("unknown version");
    }
    let priority = match b.get_u8() {
        0 => Priority::Control,
        1 => Priority::Message,
        2 => Priority::Bulk,
        _ => return Err("unknown priority"),
    };
    let flags = b.get_u8();
    if flags & !(FLAG_SKIP_USER | FLAG_SKIP_CONNECTION | FLAG_USERS) != 0 {
        return Err("unknown flags");
    }
    let skip_user = if flags & FLAG_SKIP_USER != 0 {
        Some(b.try_get_i64().map_err(|_| "truncated skip_user")?)
    } else {
        None
    };
    let skip_connection = if flags & FLAG_SKIP_CONNECTION != 0 {
        Some(b.try_get_u64().map_err(|_| "truncated skip_connection")?)
    } else {
        None
    };
    let users = if flags & FLAG_USERS != 0 {
        let n = b.try_get_u32().map_err(|_| "truncated user count")? as usize;
        if b.remaining() / 8 < n {
            return Err("truncated user list");
        }
        Some((0..n).map(|_| b.get_i64()).collect())
    } else {
        None
    };
    Ok(Decoded {
        priority,
        skip_user,
        skip_connection,
        users,
        frame: b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(users: Vec<UserId>) -> Delivery {
        Delivery {
            users: Arc::from(users),
            skip_user: Some(-3),
            skip_connection: Some(u64::MAX - 1),
            priority: Priority::Bulk,
            frame: Bytes::from_static(br#"{"type":"message"}"#),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let d = delivery(vec![1, 2, i64::MAX]);
        for with_users in [false, true] {
            let got = decode(encode(&d, with_users)).expect("decode");
            assert_eq!(got.priority, Priority::Bulk);
            assert_eq!(got.skip_user, Some(-3));
            assert_eq!(got.skip_connection, Some(u64::MAX - 1));
            assert_eq!(got.frame, d.frame);
            assert_eq!(got.users, with_users.then(|| vec![1, 2, i64::MAX]));
        }
        let plain = Delivery {
            skip_user: None,
            skip_connection: None,
            priority: Priority::Control,
            ..delivery(vec![5])
        };
        let got = decode(encode(&plain, false)).expect("decode");
        assert_eq!((got.skip_user, got.skip_connection), (None, None));
        assert_eq!(got.priority, Priority::Control);
    }

    #[test]
    fn garbage_never_panics() {
        let good = encode(&delivery(vec![1, 2, 3]), true);
        // Every truncation of a valid message, and assorted junk.
        for n in 0..good.len() {
            let _ = decode(good.slice(..n));
        }
        assert!(decode(Bytes::from_static(b"")).is_err());
        assert!(decode(Bytes::from_static(b"hello world")).is_err());
        assert!(decode(Bytes::from_static(&[0xCF, 1, 9, 0])).is_err());
        assert!(decode(Bytes::from_static(&[0xCF, 1, 0, 0x80])).is_err());
        assert!(decode(Bytes::from_static(&[0xCF, 2, 0, 0])).is_err());
        // A user count far beyond the payload.
        assert!(decode(Bytes::from_static(&[0xCF, 1, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF])).is_err());
        // Header only, empty frame: valid.
        assert!(decode(Bytes::from_static(&[0xCF, 1, 0, 0])).is_ok());
    }
}
