//! Presence: online while any device of a user is connected anywhere,
//! offline with `last_seen` when the last one goes. Friends hear about
//! changes as `presence` frames over the bus; a user may hide presence.
//!
//! The cluster-wide state lives behind [`confab_bus::Presence`]; this
//! module turns its transitions into frames. Transitions of one user are
//! serialised (sharded locks), so friends never see a stale status
//! overtake a newer one.

use std::collections::HashMap;
use std::sync::Arc;

use confab_bus::{Bus, Delivery, Presence, Priority};
use confab_proto::api::PresenceStatus;
use confab_proto::{Millis, ServerFrame, UserId};
use confab_store::{PresenceRecord, Store};
use tokio::sync::Mutex;

use crate::clock::now_millis;

const SHARDS: usize = 64;

/// Turns connection changes into presence frames.
pub struct PresenceService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    backend: Arc<dyn Presence>,
    locks: Vec<Mutex<()>>,
}

/// A user's presence as others may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Online or offline.
    pub status: PresenceStatus,
    /// Last time online; none while online or when hidden.
    pub last_seen: Option<Millis>,
}

impl PresenceService {
    /// A service over `backend`.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, backend: Arc<dyn Presence>) -> Self {
        PresenceService {
            store,
            bus,
            backend,
            locks: (0..SHARDS).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock(&self, user: UserId) -> &Mutex<()> {
        &self.locks[(user as u64 as usize) % SHARDS]
    }

    /// Serialises one user's connection changes: hold it across the hub
    /// update, the bus interest change and [`PresenceService::connected`]
    /// (or their reverse) so that a last close and a first open racing
    /// each other cannot leave the user connected but unsubscribed.
    pub async fn lock_user(&self, user: UserId) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock(user).lock().await
    }

    /// This node got the user's first connection. Call with
    /// [`PresenceService::lock_user`] held.
    pub async fn connected(&self, user: UserId) {
        match self.backend.node_online(user).await {
            Ok(true) => self.announce(user, PresenceStatus::Online, None).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, user, "presence backend unavailable"),
        }
    }

    /// This node lost the user's last connection. Call with
    /// [`PresenceService::lock_user`] held.
    pub async fn disconnected(&self, user: UserId) {
        match self.backend.node_offline(user).await {
            Ok(true) => {
                let now = now_millis();
                if let Err(e) = self.store.set_last_seen(user, now).await {
                    tracing::warn!(error = %e, user, "could not record last_seen");
                }
                self.announce(user, PresenceStatus::Offline, Some(now))
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, user, "presence backend unavailable"),
        }
    }

    /// The node that held the user's connections died, and this node
    /// found it (the presence backend reports each such user once,
    /// cluster-wide): friends see the user go offline.
    pub async fn orphaned(&self, user: UserId) {
        let _guard = self.lock(user).lock().await;
        let now = now_millis();
        if let Err(e) = self.store.set_last_seen(user, now).await {
            tracing::warn!(error = %e, user, "could not record last_seen");
        }
        self.announce(user, PresenceStatus::Offline, Some(now))
            .await;
    }

    /// The user hid or showed their presence: friends see them go offline
    /// (no `last_seen`) or come back online.
    pub async fn visibility_changed(&self, user: UserId, hidden: bool) {
        let _guard = self.lock(user).lock().await;
        let online = match self.backend.online(&[user]).await {
            Ok(set) => set.contains(&user),
            Err(e) => {
                tracing::warn!(error = %e, user, "presence backend unavailable");
                return;
            }
        };
        if !online {
            return;
        }
        let status = if hidden {
            PresenceStatus::Offline
        } else {
            PresenceStatus::Online
        };
        self.send_to_friends(user, status, None).await;
    }

    /// Tells `user`'s friends about a change, unless presence is hidden.
    async fn announce(&self, user: UserId, status: PresenceStatus, last_seen: Option<Millis>) {
        match self.store.presence_records(&[user]).await {
            Ok(r) if r.get(&user).is_some_and(|r| r.hidden) => {}
            Ok(_) => self.send_to_friends(user, status, last_seen).await,
            Err(e) => tracing::warn!(error = %e, user, "could not read presence settings"),
        }
    }

    async fn send_to_friends(
        &self,
        user: UserId,
        status: PresenceStatus,
        last_seen: Option<Millis>,
    ) {
        let friends = match self.store.friend_ids(user).await {
            Ok(f) if f.is_empty() => return,
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, user, "could not read friends for presence");
                return;
            }
        };
        self.send(Arc::from(friends), user, status, last_seen).await;
    }

    /// Sends one `presence` frame about `user` to `to`.
    pub async fn send(
        &self,
        to: Arc<[UserId]>,
        user: UserId,
        status: PresenceStatus,
        last_seen: Option<Millis>,
    ) {
        let frame = ServerFrame::Presence {
            user_id: user,
            status,
            last_seen,
        };
        let delivery = Delivery::to(to, Priority::Control, frame.encode());
        crate::events::send(self.bus.as_ref(), delivery).await;
    }

    /// How `users` look to others right now.
    pub async fn seen(&self, users: &[UserId]) -> HashMap<UserId, Seen> {
        let online = match self.backend.online(users).await {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, "presence backend unavailable");
                Default::default()
            }
        };
        let records = match self.store.presence_records(users).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not read presence settings");
                HashMap::new()
            }
        };
        users
            .iter()
            .map(|&u| {
                let r: PresenceRecord = records.get(&u).copied().unwrap_or_default();
                let seen = if r.hidden {
                    Seen {
                        status: PresenceStatus::Offline,
                        last_seen: None,
                    }
                } else if online.contains(&u) {
                    Seen {
                        status: PresenceStatus::Online,
                        last_seen: None,
                    }
                } else {
                    Seen {
                        status: PresenceStatus::Offline,
                        last_seen: r.last_seen,
                    }
                };
                (u, seen)
            })
            .collect()
    }

    /// `presence` frames for every friend of `user`, for a new connection.
    pub async fn snapshot_frames(&self, user: UserId) -> Vec<ServerFrame> {
        let friends = match self.store.friend_ids(user).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, user, "could not read friends for presence");
                return Vec::new();
            }
        };
        let seen = self.seen(&friends).await;
        let mut frames: Vec<(UserId, ServerFrame)> = seen
            .into_iter()
            .map(|(u, s)| {
                (
                    u,
                    ServerFrame::Presence {
                        user_id: u,
                        status: s.status,
                        last_seen: s.last_seen,
                    },
                )
            })
            .collect();
        frames.sort_by_key(|(u, _)| *u);
        frames.into_iter().map(|(_, f)| f).collect()
    }
}
