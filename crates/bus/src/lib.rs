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
use confab_proto::{DeviceId, UserId};

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

/// First byte of a node-control frame. Frames for clients are JSON text and
/// start with `{`; a frame starting with this byte is an instruction for
/// the receiving node's hub and is never written to a socket.
pub const CONTROL_MARK: u8 = 0;

/// An instruction for the nodes holding a user's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the user's connections of these devices (logout, refresh-token
    /// reuse), or of every device but these (`except`, password change).
    Disconnect {
        /// Devices named.
        devices: Vec<DeviceId>,
        /// Close every device except the ones named.
        except: bool,
    },
}

impl Delivery {
    /// `frame` for every connected device of `users`, skipping nobody.
    pub fn to(users: Arc<[UserId]>, priority: Priority, frame: impl Into<Bytes>) -> Delivery {
        Delivery {
            users,
            skip_user: None,
            skip_connection: None,
            priority,
            frame: frame.into(),
        }
    }

    /// A delivery telling every node to close `user`'s connections of
    /// `devices` (or of all other devices when `except`).
    pub fn disconnect(user: UserId, devices: &[DeviceId], except: bool) -> Delivery {
        let mut frame = Vec::with_capacity(3 + devices.len() * 8);
        frame.extend_from_slice(&[CONTROL_MARK, b'D', u8::from(except)]);
        for d in devices {
            frame.extend_from_slice(&d.to_be_bytes());
        }
        Delivery::to(Arc::from(vec![user]), Priority::Control, frame)
    }

    /// The node-control instruction this delivery carries, if it is one.
    /// `Some(None)`: a control frame that could not be read (drop it).
    pub fn control(&self) -> Option<Option<Control>> {
        let f = &self.frame[..];
        if f.first() != Some(&CONTROL_MARK) {
            return None;
        }
        Some(match f {
            [_, b'D', except @ (0 | 1), rest @ ..] if rest.len() % 8 == 0 => {
                let devices = rest
                    .chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        DeviceId::from_be_bytes(b)
                    })
                    .collect();
                Some(Control::Disconnect {
                    devices,
                    except: *except == 1,
                })
            }
            _ => None,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_round_trip_and_never_look_like_json() {
        let d = Delivery::disconnect(7, &[3, -1, i64::MAX], true);
        assert_eq!(d.users.as_ref(), &[7]);
        assert_ne!(d.frame.first(), Some(&b'{'));
        assert_eq!(
            d.control(),
            Some(Some(Control::Disconnect {
                devices: vec![3, -1, i64::MAX],
                except: true
            }))
        );
        let text = Delivery {
            frame: Bytes::from_static(br#"{"type":"pong"}"#),
            ..d.clone()
        };
        assert_eq!(text.control(), None);
        let broken = Delivery {
            frame: Bytes::from_static(&[CONTROL_MARK, b'D', 1, 0, 0]),
            ..d
        };
        assert_eq!(broken.control(), Some(None));
    }
}
