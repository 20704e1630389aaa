//! The bus: carries encoded frames from the node that committed (or received)
//! something to the nodes that hold the recipients' connections.
//!
//! A [`Delivery`] names recipient users and carries one already-encoded
//! frame, so fan-out encodes once. Nodes declare interest in the users that
//! have a connection on them; a backend routes each delivery to the
//! interested nodes, whose [`DeliverySink`] (the server's hub) writes it into
//! the connections' outbound queues.
//!
//! [`LocalBus`] is the embedded, in-process backend: publishing calls the
//! sink directly. A NATS backend implements the same trait for clusters.

mod local;
mod nats;
mod nats_presence;
mod presence;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use confab_proto::UserId;

pub use local::LocalBus;
pub use nats::{user_subject, NatsBus, NatsBusOptions, FANOUT_PER_USER_MAX, FANOUT_SUBJECT};
pub use nats_presence::{NatsPresence, NatsPresenceOptions, DEFAULT_PRESENCE_TTL};
pub use presence::{LocalPresence, Presence};

/// How urgently a frame must reach the client; decides its place in the
/// connection's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Acks, errors, receipts, typing, presence, pongs.
    Control,
    /// Live chat messages.
    Message,
    /// Catch-up (sync) traffic.
    Bulk,
}

/// Identifies one WebSocket connection across the cluster (node-unique
/// prefix + counter), so a delivery can skip the connection that caused it.
pub type ConnectionId = u64;

/// One frame for a set of users.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Users whose connected devices get the frame.
    pub users: Arc<[UserId]>,
    /// Skip every connection of this user (typing is not echoed to oneself).
    pub skip_user: Option<UserId>,
    /// Skip this connection (the sender's, which gets an `ack` instead).
    pub skip_connection: Option<ConnectionId>,
    /// Queue class.
    pub priority: Priority,
    /// The encoded JSON text frame.
    pub frame: Bytes,
}

/// Receives deliveries for the users this node is interested in.
pub trait DeliverySink: Send + Sync + 'static {
    /// Hands one delivery to local connections. Must not block.
    fn deliver(&self, delivery: &Delivery);
}

/// Bus errors.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached; the delivery did not go out.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Routes deliveries between nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Installs the local sink. Called once at startup, before any publish.
    fn attach(&self, sink: Arc<dyn DeliverySink>);
    /// Sends a delivery to every node interested in any of its users.
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError>;
    /// This node now has (or no longer has) a connection of `user`.
    async fn set_interest(&self, user: UserId, interested: bool) -> Result<(), BusError>;
    /// Whether the bus is connected (for `/readyz`).
    fn is_ready(&self) -> bool;
}
