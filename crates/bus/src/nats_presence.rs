//! Cluster presence over NATS JetStream key-value buckets.
//!
//! # Layout
//!
//! Each running node is a *member*: `<node_id>-<random>`, fresh at every
//! start, so a restarted node never inherits the entries of its previous
//! life.
//!
//! - Bucket `confab_presence_nodes`: key `n.<member>`, value the member's
//!   expiry (Unix milliseconds, decimal ASCII). Each node rewrites its own
//!   key every TTL/3 with `now + TTL` from a background task. A member is
//!   *live* while its expiry has not passed. The bucket's `max_age` (4 ×
//!   TTL) removes dead members' keys as a backstop.
//! - Bucket `confab_presence`: key `u.<user_id>`, value a JSON array of the
//!   members holding the user (`["node-a-3f…", …]`). Changed only when a
//!   node gets a user's first connection or loses the last, with
//!   compare-and-swap on the key's revision (retried on conflict); each
//!   change also drops the members that are no longer live. No `max_age`:
//!   the key of a user connected for days is not rewritten meanwhile.
//!
//! A user is online when any *live* member holds it, so the users of a node
//! that died (or lost NATS) go offline by themselves once its expiry passes,
//! within the TTL ([`DEFAULT_PRESENCE_TTL`], 15 s), without anyone cleaning
//! up. Their friends are told by a surviving node: every node looks for
//! expired members at each heartbeat, and the one whose compare-and-swap
//! marks the dead member's key `reaped` first removes it from its users'
//! keys and reports, through [`Presence::take_orphans`], each user left with
//! no live member. So each orphan is reported once, within the TTL plus a
//! heartbeat period (TTL/3). Should that node die in the middle, the rest
//! of the dead member's users go unannounced (their status reads offline
//! all the same). Transitions are exact across nodes: CAS serialises the writers of a
//! key, and each writer sees the others' membership at the revision it
//! replaced, so exactly one [`Presence::node_online`] reports the first
//! connection and exactly one [`Presence::node_offline`] the last.
//!
//! # Costs
//!
//! - Refresh: one KV put per node per TTL/3, whatever the number of users
//!   (a per-user expiry would cost a write per user per TTL/3).
//! - A transition: one read and one CAS write of the user's key, plus a
//!   read of each *other* member's heartbeat key unless a still-valid expiry
//!   is cached (a member's expiry is cached until it passes).
//! - [`Presence::online`]: one read per user (32 in flight), plus member
//!   lookups as above.
//!
//! Expiries are wall-clock times written by one node and compared by
//! others: clock skew between nodes must stay well below the TTL.
//!
//! # Failures
//!
//! Calls fail fast with [`BusError::Unavailable`] while the client is
//! disconnected. The node still records what it was told (the user is, or
//! is no longer, on this node) and the background task writes it to the
//! bucket once NATS answers again; after a failed or late heartbeat (others
//! may have pruned this member meanwhile) it rewrites all its users. The
//! transitions of that period are not reported: the server should treat a
//! bus reconnect as "presence may have changed".

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{stream, Context};
use async_nats::{Client, ConnectOptions};
use async_trait::async_trait;
use bytes::Bytes;
use confab_proto::UserId;
use futures_util::{StreamExt, TryStreamExt};
use tokio::task::AbortHandle;

use crate::{BusError, Presence};

/// How long a node's users stay online after its last heartbeat.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);

const SHARDS: usize = 64;
const CAS_ATTEMPTS: usize = 32;
const ONLINE_CONCURRENCY: usize = 32;

/// Settings of a [`NatsPresence`].
#[derive(Debug, Clone)]
pub struct NatsPresenceOptions {
    /// How long a node's users stay online after its last heartbeat;
    /// heartbeats go out every third of it.
    pub ttl: Duration,
    /// Bound on each JetStream request.
    pub request_timeout: Duration,
    /// Bucket of user keys.
    pub users_bucket: String,
    /// Bucket of node heartbeats.
    pub nodes_bucket: String,
}

impl Default for NatsPresenceOptions {
    fn default() -> Self {
        NatsPresenceOptions {
            ttl: DEFAULT_PRESENCE_TTL,
            request_timeout: Duration::from_secs(2),
            users_bucket: "confab_presence".into(),
            nodes_bucket: "confab_presence_nodes".into(),
        }
    }
}

impl NatsPresenceOptions {
    /// Defaults with `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        NatsPresenceOptions {
            ttl,
            ..Default::default()
        }
    }
}

/// [`Presence`] shared by the nodes of a cluster through NATS KV. See the
/// module docs for the layout and its costs.
pub struct NatsPresence {
    inner: Arc<Inner>,
    task: AbortHandle,
}

struct Inner {
    client: Client,
    js: Context,
    options: NatsPresenceOptions,
    users: kv::Store,
    nodes: kv::Store,
    /// This process's member id.
    member: String,
    /// Users with a connection on this node (what the server told us).
    mine: Mutex<HashSet<UserId>>,
    /// Users whose key may not reflect `mine` (a write failed, or others
    /// may have pruned this member).
    dirty: Mutex<HashSet<UserId>>,
    /// Serialise the changes of one user on this node.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Known expiries of other members (Unix ms).
    expiries: Mutex<HashMap<String, u64>>,
    /// The expiry of this member's last written heartbeat (Unix ms).
    my_expiry: AtomicU64,
    /// Where orphans found by this node go (see [`Presence::take_orphans`]).
    orphans_tx: tokio::sync::mpsc::Sender<UserId>,
    /// The receiving end, until the server takes it.
    orphans_rx: Mutex<Option<tokio::sync::mpsc::Receiver<UserId>>>,
}

/// The value a dead member's heartbeat key gets from the node that reaps it.
const REAPED: &[u8] = b"reaped";
/// Orphans waiting for the server to announce them; past this the reaper
/// waits.
const ORPHAN_QUEUE: usize = 4096;

impl NatsPresence {
    /// Connects to `url` (its own connection) with TTL `ttl`.
    pub async fn connect(
        url: &str,
        node_id: &str,
        ttl: Duration,
    ) -> Result<NatsPresence, BusError> {
        let client = ConnectOptions::new()
            .name(format!("confab-presence {node_id}"))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100)
                    .saturating_mul(attempts as u32)
                    .min(Duration::from_secs(1))
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(format!("nats connect {url}: {e}")))?;
        NatsPresence::new(client, node_id, NatsPresenceOptions::with_ttl(ttl)).await
    }

    /// Uses an existing client (e.g. [`crate::NatsBus::client`]): creates
    /// the buckets if needed, writes the first heartbeat and starts the
    /// heartbeat task. Fails if NATS does not answer.
    pub async fn new(
        client: Client,
        node_id: &str,
        options: NatsPresenceOptions,
    ) -> Result<NatsPresence, BusError> {
        let js = ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        let (users, nodes) = ensure_buckets(&js, &options).await?;
        let (orphans_tx, orphans_rx) = tokio::sync::mpsc::channel(ORPHAN_QUEUE);
        let inner = Arc::new(Inner {
            orphans_tx,
            orphans_rx: Mutex::new(Some(orphans_rx)),
            client,
            js,
            users,
            nodes,
            member: format!("{}-{:016x}", key_safe(node_id), random_u64()),
            mine: Mutex::new(HashSet::new()),
            dirty: Mutex::new(HashSet::new()),
            locks: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            expiries: Mutex::new(HashMap::new()),
            my_expiry: AtomicU64::new(0),
            options,
        });
        inner.heartbeat().await?;
        let task = tokio::spawn(maintain(Arc::downgrade(&inner))).abort_handle();
        Ok(NatsPresence { inner, task })
    }

    /// Whether the NATS connection is up (calls fail fast while it is not).
    pub fn is_ready(&self) -> bool {
        self.inner.check_connected().is_ok()
    }

    /// This process's member id (`<node_id>-<random>`).
    pub fn member_id(&self) -> &str {
        &self.inner.member
    }

    /// Stops heartbeats and deletes this member's heartbeat key: other
    /// nodes see its users go offline once the expiry they cached passes
    /// (at most the TTL). Dropping stops heartbeats without the delete.
    pub async fn shutdown(&self) {
        self.task.abort();
        let key = node_key(&self.inner.member);
        if let Err(e) = self.inner.nodes.delete(&key).await {
            tracing::debug!(error = %e, "could not delete presence heartbeat");
        }
    }
}

impl Drop for NatsPresence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Presence for NatsPresence {
    async fn node_online(&self, user: UserId) -> Result<bool, BusError> {
        let inner = &self.inner;
        let _g = inner.lock(user).lock().await;
        if !lock(&inner.mine).insert(user) {
            return Ok(false);
        }
        match inner.write_membership(user, true).await {
            Ok(others) => {
                lock(&inner.dirty).remove(&user);
                Ok(!others)
            }
            Err(e) => {
                lock(&inner.dirty).insert(user);
                Err(e)
            }
        }
    }

    async fn node_offline(&self, user: UserId) -> Result<bool, BusError> {
        let inner = &self.inner;
        let _g = inner.lock(user).lock().await;
        if !lock(&inner.mine).remove(&user) {
            return Ok(false);
        }
        match inner.write_membership(user, false).await {
            Ok(others) => {
                lock(&inner.dirty).remove(&user);
                Ok(!others)
            }
            Err(e) => {
                lock(&inner.dirty).insert(user);
                Err(e)
            }
        }
    }

    async fn online(&self, users: &[UserId]) -> Result<HashSet<UserId>, BusError> {
        let inner = &self.inner;
        inner.check_connected()?;
        let local: HashSet<UserId> = {
            let mine = lock(&inner.mine);
            users.iter().copied().filter(|u| mine.contains(u)).collect()
        };
        let remote: Vec<UserId> = users
            .iter()
            .copied()
            .filter(|u| !local.contains(u))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let found: Vec<Option<UserId>> = futures_util::stream::iter(remote)
            .map(|user| async move {
                let (_, members) = inner.read_members(user).await?;
                for m in members {
                    if m != inner.member && inner.is_live(&m).await? {
                        return Ok::<_, BusError>(Some(user));
                    }
                }
                Ok(None)
            })
            .buffer_unordered(ONLINE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(local
            .into_iter()
            .chain(found.into_iter().flatten())
            .collect())
    }

    fn take_orphans(&self) -> Option<tokio::sync::mpsc::Receiver<UserId>> {
        lock(&self.inner.orphans_rx).take()
    }
}

impl Inner {
    fn lock(&self, user: UserId) -> &tokio::sync::Mutex<()> {
        &self.locks[user.rem_euclid(SHARDS as i64) as usize]
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.options.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn check_connected(&self) -> Result<(), BusError> {
        if self.client.connection_state() == State::Connected {
            Ok(())
        } else {
            Err(BusError::Unavailable("presence: NATS disconnected".into()))
        }
    }

    /// Writes this member's expiry. True when the previous one had passed
    /// before this write (others may have pruned this member meanwhile).
    async fn heartbeat(&self) -> Result<bool, BusError> {
        self.check_connected()?;
        let expiry = now_ms().saturating_add(self.ttl_ms());
        self.nodes
            .put(node_key(&self.member), Bytes::from(expiry.to_string()))
            .await
            .map_err(|e| BusError::Unavailable(format!("presence heartbeat: {e}")))?;
        let previous = self.my_expiry.swap(expiry, Ordering::Relaxed);
        Ok(previous != 0 && now_ms() >= previous)
    }

    /// The user's key: its revision (none if absent) and members.
    async fn read_members(&self, user: UserId) -> Result<(Option<u64>, Vec<String>), BusError> {
        let entry = self
            .users
            .entry(user_key(user))
            .await
            .map_err(|e| BusError::Unavailable(format!("presence read: {e}")))?;
        Ok(match entry {
            None => (None, Vec::new()),
            Some(e) if e.operation != Operation::Put => (Some(e.revision), Vec::new()),
            Some(e) => (
                Some(e.revision),
                serde_json::from_slice::<Vec<String>>(&e.value).unwrap_or_else(|err| {
                    tracing::warn!(user, error = %err, "bad presence entry; replacing it");
                    Vec::new()
                }),
            ),
        })
    }

    /// Adds (or removes) this member to the user's key, dropping members
    /// that are no longer live. Returns whether another live member holds
    /// the user.
    async fn write_membership(&self, user: UserId, add: bool) -> Result<bool, BusError> {
        self.check_connected()?;
        let key = user_key(user);
        for _ in 0..CAS_ATTEMPTS {
            let (revision, members) = self.read_members(user).await?;
            let mut next: Vec<String> = Vec::with_capacity(members.len() + 1);
            for m in &members {
                if *m != self.member && !next.contains(m) && self.is_live(m).await? {
                    next.push(m.clone());
                }
            }
            let others = !next.is_empty();
            if add {
                next.push(self.member.clone());
            }
            if next == members {
                return Ok(others);
            }
            let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
            let written = match revision {
                Some(r) => match self.users.update(&key, value, r).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(BusError::Unavailable(format!("presence write: {e}"))),
                },
                None => match self.users.create(&key, value).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(BusError::Unavailable(format!("presence write: {e}"))),
                },
            };
            if written {
                return Ok(others);
            }
        }
        Err(BusError::Unavailable(format!(
            "presence: key of user {user} kept changing"
        )))
    }

    /// Whether `member`'s heartbeat has not expired.
    async fn is_live(&self, member: &str) -> Result<bool, BusError> {
        let now = now_ms();
        if lock(&self.expiries).get(member).is_some_and(|&e| e > now) {
            return Ok(true);
        }
        let entry = self
            .nodes
            .entry(node_key(member))
            .await
            .map_err(|e| BusError::Unavailable(format!("presence read: {e}")))?;
        let expiry = entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| {
                std::str::from_utf8(&e.value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        let mut expiries = lock(&self.expiries);
        match expiry {
            Some(e) if e > now => {
                expiries.insert(member.to_owned(), e);
                Ok(true)
            }
            _ => {
                expiries.remove(member);
                Ok(false)
            }
        }
    }

    /// Claims every member whose heartbeat expired (one compare-and-swap
    /// wins per member, cluster-wide) and releases its users.
    async fn reap_dead_members(&self) -> Result<(), BusError> {
        let unavailable =
            |e: &dyn std::fmt::Display| BusError::Unavailable(format!("presence reap: {e}"));
        let keys: Vec<String> = self
            .nodes
            .keys()
            .await
            .map_err(|e| unavailable(&e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&e))?;
        let now = now_ms();
        for key in keys {
            let Some(member) = key.strip_prefix("n.") else {
                continue;
            };
            if member == self.member {
                continue;
            }
            let Some(entry) = self.nodes.entry(&key).await.map_err(|e| unavailable(&e))? else {
                continue;
            };
            if entry.operation != Operation::Put || entry.value.as_ref() == REAPED {
                continue;
            }
            let expiry = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if expiry.is_some_and(|e| e > now) {
                continue;
            }
            match self
                .nodes
                .update(&key, Bytes::from_static(REAPED), entry.revision)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        member,
                        "presence: a node's heartbeat expired; releasing its users"
                    );
                    lock(&self.expiries).remove(member);
                    self.release_users_of(member).await?;
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {} // another node won
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Ok(())
    }

    /// Removes the dead `member` from every user key holding it; a user
    /// left with no live member is an orphan, reported once.
    async fn release_users_of(&self, dead: &str) -> Result<(), BusError> {
        let unavailable =
            |e: &dyn std::fmt::Display| BusError::Unavailable(format!("presence reap: {e}"));
        let keys: Vec<String> = self
            .users
            .keys()
            .await
            .map_err(|e| unavailable(&e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&e))?;
        for key in keys {
            let Some(user) = key
                .strip_prefix("u.")
                .and_then(|u| u.parse::<UserId>().ok())
            else {
                continue;
            };
            let _g = self.lock(user).lock().await;
            for _ in 0..CAS_ATTEMPTS {
                let (revision, members) = self.read_members(user).await?;
                let Some(revision) = revision else { break };
                if !members.iter().any(|m| m == dead) {
                    break;
                }
                let mut next = Vec::with_capacity(members.len());
                for m in &members {
                    if m != dead && (*m == self.member || self.is_live(m).await?) {
                        next.push(m.clone());
                    }
                }
                let value = Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
                match self.users.update(&key, value, revision).await {
                    Ok(_) => {
                        // Never wait here: this runs in the heartbeat task.
                        if next.is_empty() {
                            if let Err(e) = self.orphans_tx.try_send(user) {
                                tracing::warn!(user, error = %e, "presence: orphan not announced");
                            }
                        }
                        break;
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(unavailable(&e)),
                }
            }
        }
        Ok(())
    }

    /// Writes the dirty users' membership; stops at the first failure.
    async fn reconcile(&self) {
        let dirty: Vec<UserId> = lock(&self.dirty).iter().copied().collect();
        for user in dirty {
            let _g = self.lock(user).lock().await;
            if !lock(&self.dirty).contains(&user) {
                continue; // a transition wrote it meanwhile
            }
            let here = lock(&self.mine).contains(&user);
            match self.write_membership(user, here).await {
                Ok(_) => {
                    lock(&self.dirty).remove(&user);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence reconcile failed; retrying later");
                    return;
                }
            }
        }
    }
}

/// Heartbeats every TTL/3; after a failure or a late heartbeat, rewrites
/// every local user.
async fn maintain(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => (i.options.ttl / 3).max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; `new` just wrote one
    let mut failed = false;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.heartbeat().await {
            Ok(late) => {
                if late || failed {
                    tracing::info!("presence heartbeat resumed; rewriting local users");
                    let mine: Vec<UserId> = lock(&inner.mine).iter().copied().collect();
                    lock(&inner.dirty).extend(mine);
                }
                failed = false;
                inner.reconcile().await;
                if let Err(e) = inner.reap_dead_members().await {
                    tracing::warn!(error = %e, "presence: could not look for dead nodes");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence heartbeat failed");
                failed = true;
                // The buckets may be gone (NATS restarted without its
                // store); recreate them for the next attempt.
                if inner.check_connected().is_ok() {
                    if let Err(e) = ensure_buckets(&inner.js, &inner.options).await {
                        tracing::debug!(error = %e, "presence buckets not ready");
                    }
                }
            }
        }
    }
}

/// Creates the buckets, or opens them when they exist (possibly created
/// with another node's settings).
async fn ensure_buckets(
    js: &Context,
    options: &NatsPresenceOptions,
) -> Result<(kv::Store, kv::Store), BusError> {
    let users = ensure_bucket(
        js,
        &options.users_bucket,
        "Confab presence: members holding each user",
        Duration::ZERO,
    )
    .await?;
    let nodes = ensure_bucket(
        js,
        &options.nodes_bucket,
        "Confab presence: member heartbeats",
        options.ttl.saturating_mul(4),
    )
    .await?;
    Ok((users, nodes))
}

/// Opens the bucket, creating its stream first if needed.
///
/// The stream is created by hand with the settings `create_key_value`
/// would use: async-nats 0.51's `create_key_value` first reads the account
/// info, whose parsing fails against nats-server 2.9 (it lacks the
/// `reserved_memory`/`reserved_storage` fields the client requires).
async fn ensure_bucket(
    js: &Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, BusError> {
    let unavailable =
        |e: &dyn std::fmt::Display| BusError::Unavailable(format!("presence bucket {bucket}: {e}"));
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(create) = js.create_stream(config).await {
        // Another node may have created it meanwhile.
        return js
            .get_key_value(bucket)
            .await
            .map_err(|get| unavailable(&format!("{create}; {get}")));
    }
    js.get_key_value(bucket).await.map_err(|e| unavailable(&e))
}

fn user_key(user: UserId) -> String {
    format!("u.{user}")
}

fn node_key(member: &str) -> String {
    format!("n.{member}")
}

/// `id` restricted to characters valid in a KV key token.
fn key_safe(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "node".into()
    } else {
        s
    }
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid() {
        assert_eq!(key_safe("node-1"), "node-1");
        assert_eq!(key_safe("a.b c*>"), "a_b_c__");
        assert_eq!(key_safe(""), "node");
        assert_eq!(user_key(-5), "u.-5");
        assert_ne!(random_u64(), random_u64());
    }
}
