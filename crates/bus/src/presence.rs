//! Cluster-wide presence: which users have a connection on some node.
//!
//! Each node reports when it gets a user's first connection and loses the
//! last one; the backend answers whether that changed the user's status
//! across the whole cluster. [`LocalPresence`] is the single-node backend;
//! a cluster backend keeps per-node entries with a time to live, so a
//! crashed node's users go offline by themselves.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use confab_proto::UserId;

use crate::BusError;

/// Online users across the cluster.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// This node now has a connection of `user`; true when the user was
    /// offline everywhere until now.
    async fn node_online(&self, user: UserId) -> Result<bool, BusError>;
    /// This node has no connection of `user` any more; true when the user
    /// is now offline everywhere.
    async fn node_offline(&self, user: UserId) -> Result<bool, BusError>;
    /// Which of `users` are online somewhere.
    async fn online(&self, users: &[UserId]) -> Result<HashSet<UserId>, BusError>;
    /// Users who went offline because the node holding them died, each
    /// reported by exactly one surviving node (this one, when it is on
    /// this receiver): their friends must be told. Taken once; `None` for
    /// a backend without other nodes.
    fn take_orphans(&self) -> Option<tokio::sync::mpsc::Receiver<UserId>> {
        None
    }
}

/// Presence of a single node: the node's own connections are everything.
#[derive(Debug, Default)]
pub struct LocalPresence {
    online: Mutex<HashSet<UserId>>,
}

impl LocalPresence {
    /// Nobody online.
    pub fn new() -> LocalPresence {
        LocalPresence::default()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        self.online.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn node_online(&self, user: UserId) -> Result<bool, BusError> {
        Ok(self.set().insert(user))
    }

    async fn node_offline(&self, user: UserId) -> Result<bool, BusError> {
        Ok(self.set().remove(&user))
    }

    async fn online(&self, users: &[UserId]) -> Result<HashSet<UserId>, BusError> {
        let set = self.set();
        Ok(users.iter().copied().filter(|u| set.contains(u)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transitions_are_reported_once() {
        let p = LocalPresence::new();
        assert!(p.node_online(1).await.expect("online"));
        assert!(!p.node_online(1).await.expect("again"));
        assert_eq!(p.online(&[1, 2]).await.expect("query"), HashSet::from([1]));
        assert!(p.node_offline(1).await.expect("offline"));
        assert!(!p.node_offline(1).await.expect("again"));
        assert!(p.online(&[1]).await.expect("query").is_empty());
    }
}
