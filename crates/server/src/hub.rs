//! The hub: which users have connections on this node, and handing
//! deliveries from the bus to those connections' outbound queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use confab_bus::{ConnectionId, Control, Delivery, DeliverySink};
use confab_proto::{DeviceId, UserId};

use crate::chat::calls::Calls;
use crate::outbound::{Closed, Outbound};

/// How every `call` frame starts on the wire (serde writes the tag first).
const CALL_FRAME_PREFIX: &[u8] = br#"{"type":"call","#;

const SHARDS: usize = 32;

/// One live connection as the hub sees it.
#[derive(Clone)]
pub struct ConnectionEntry {
    /// Cluster-unique connection id.
    pub id: ConnectionId,
    /// The device it belongs to.
    pub device_id: DeviceId,
    /// Its outbound queue.
    pub outbound: Arc<Outbound>,
}

type Shard = RwLock<HashMap<UserId, Vec<ConnectionEntry>>>;

/// Registry of local connections, sharded by user to keep lock contention
/// low under fan-out.
pub struct Hub {
    shards: Vec<Shard>,
    next_id: AtomicU64,
    node_prefix: u64,
    /// Sees the call frames delivered here (busy, accept, hangup, …).
    /// Weak: the registry holds the committer, and the bus (which holds
    /// this hub) is held by the commit task; a strong link would keep the
    /// commit queue open after shutdown.
    calls: OnceLock<std::sync::Weak<Calls>>,
}

impl Hub {
    /// An empty hub. `node_prefix` makes connection ids unique across nodes.
    pub fn new(node_prefix: u16) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            node_prefix: u64::from(node_prefix) << 48,
            calls: OnceLock::new(),
        }
    }

    /// Lets the call registry see the call frames delivered to users on
    /// this node (set once, at startup).
    pub fn watch_calls(&self, calls: &Arc<Calls>) {
        let _ = self.calls.set(Arc::downgrade(calls));
    }

    /// Whether a call frame for `user` may be handed to their connections
    /// (the call registry learns from it on the way).
    fn call_frame_passes(&self, user: UserId, frame: &[u8]) -> bool {
        let Some(calls) = self.calls.get().and_then(std::sync::Weak::upgrade) else {
            return true;
        };
        if !frame.starts_with(CALL_FRAME_PREFIX) {
            return true;
        }
        match serde_json::from_slice::<confab_proto::ServerFrame>(frame) {
            Ok(f) => calls.delivered(user, &f),
            Err(_) => true,
        }
    }

    fn shard(&self, user: UserId) -> &Shard {
        &self.shards[(user as u64 as usize) % SHARDS]
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> ConnectionId {
        self.node_prefix | self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connection; returns true if it is the user's first on this node.
    pub fn register(&self, user: UserId, entry: ConnectionEntry) -> bool {
        let mut map = self.shard(user).write().unwrap_or_else(|p| p.into_inner());
        let conns = map.entry(user).or_default();
        conns.push(entry);
        conns.len() == 1
    }

    /// Removes a connection; returns true if the user has none left here.
    pub fn unregister(&self, user: UserId, id: ConnectionId) -> bool {
        let mut map = self.shard(user).write().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = map.get_mut(&user) else {
            return false;
        };
        conns.retain(|c| c.id != id);
        if conns.is_empty() {
            map.remove(&user);
            true
        } else {
            false
        }
    }

    /// Closes the user's connections on this node whose device matches
    /// `revoked` (logout, password change, refresh-token reuse).
    pub fn disconnect_devices(&self, user: UserId, revoked: impl Fn(DeviceId) -> bool) {
        let map = self.shard(user).read().unwrap_or_else(|p| p.into_inner());
        for c in map.get(&user).into_iter().flatten() {
            if revoked(c.device_id) {
                c.outbound.revoke();
            }
        }
    }

    /// Closes every connection on this node so that clients reconnect and
    /// sync (after a bus outage live deliveries may have been missed).
    pub fn resync_all(&self) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            for c in map.values().flatten() {
                c.outbound.resync();
                n += 1;
            }
        }
        n
    }

    /// Connections on this node of the user (all devices) and of one of
    /// their devices.
    pub fn connection_counts(&self, user: UserId, device: DeviceId) -> (usize, usize) {
        let map = self.shard(user).read().unwrap_or_else(|p| p.into_inner());
        map.get(&user).map_or((0, 0), |conns| {
            let of_device = conns.iter().filter(|c| c.device_id == device).count();
            (conns.len(), of_device)
        })
    }

    /// Number of connections the user has on this node.
    pub fn connection_count(&self, user: UserId) -> usize {
        let map = self.shard(user).read().unwrap_or_else(|p| p.into_inner());
        map.get(&user).map_or(0, Vec::len)
    }
}

impl DeliverySink for Hub {
    fn deliver(&self, d: &Delivery) {
        match d.control() {
            None => {}
            Some(Some(Control::Disconnect { devices, except })) => {
                for &user in d.users.iter() {
                    self.disconnect_devices(user, |dev| devices.contains(&dev) != except);
                }
                return;
            }
            Some(None) => {
                tracing::warn!("unreadable control frame dropped");
                return;
            }
        }
        for &user in d.users.iter() {
            if d.skip_user == Some(user) {
                continue;
            }
            if !self.call_frame_passes(user, &d.frame) {
                continue;
            }
            let map = self.shard(user).read().unwrap_or_else(|p| p.into_inner());
            let Some(conns) = map.get(&user) else {
                continue;
            };
            for c in conns {
                if d.skip_connection == Some(c.id) {
                    continue;
                }
                if let Err(Closed::TooSlow) = c.outbound.push(d.priority, d.frame.clone()) {
                    // The connection's own task sees the closed queue and
                    // hangs up; nothing else to do here.
                    tracing::debug!(user, connection = c.id, "slow consumer");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use confab_bus::Priority;

    use super::*;

    #[test]
    fn deliver_skips_the_origin_and_reaches_every_device() {
        let hub = Hub::new(1);
        let q = |_: u8| Arc::new(Outbound::new(16, 1 << 16));
        let (a1, a2, b1) = (q(0), q(1), q(2));
        let ids: Vec<_> = (0..3).map(|_| hub.next_connection_id()).collect();
        assert!(hub.register(
            1,
            ConnectionEntry {
                id: ids[0],
                device_id: 10,
                outbound: a1.clone()
            }
        ));
        assert!(!hub.register(
            1,
            ConnectionEntry {
                id: ids[1],
                device_id: 11,
                outbound: a2.clone()
            }
        ));
        hub.register(
            2,
            ConnectionEntry {
                id: ids[2],
                device_id: 20,
                outbound: b1.clone(),
            },
        );
        hub.deliver(&Delivery {
            users: Arc::from(vec![1, 2, 3]),
            skip_user: None,
            skip_connection: Some(ids[0]),
            priority: Priority::Message,
            frame: Bytes::from_static(b"m"),
        });
        assert!(a1.pop().is_none(), "origin connection skipped");
        assert!(a2.pop().is_some(), "sender's other device gets it");
        assert!(b1.pop().is_some());
        assert!(!hub.unregister(1, ids[0]));
        assert!(hub.unregister(1, ids[1]));
        assert_eq!(hub.connection_count(1), 0);
    }
}
