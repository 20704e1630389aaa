//! Shared server state, passed to every handler and connection.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use confab_bus::Bus;
use confab_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::committer::Committer;
use crate::config::Config;
use crate::hub::Hub;
use crate::presence::PresenceService;

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// What the state holds.
pub struct Inner {
    /// Effective configuration.
    pub config: Config,
    /// Storage backend.
    pub store: Arc<dyn Store>,
    /// Message bus.
    pub bus: Arc<dyn Bus>,
    /// Local connections.
    pub hub: Arc<Hub>,
    /// Group committer.
    pub committer: Committer,
    /// The calls this node knows about (ephemeral).
    pub calls: Arc<crate::chat::calls::Calls>,
    /// Presence tracking and announcements.
    pub presence: Arc<PresenceService>,
    /// Passwords and tokens.
    pub auth: Arc<Auth>,
    /// OpenID Connect providers; none when no provider is configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Failed-login and registration limits.
    pub throttle: crate::throttle::Throttle,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Open WebSocket connections on this node.
    pub open_connections: AtomicUsize,
    /// When (Unix seconds) the connection limit was last logged: once a
    /// second at most, a full node being refused many times a second.
    pub limit_warned_s: AtomicU64,
    /// Media bytes (local directory or S3).
    pub blobs: Arc<dyn confab_blobs::BlobStore>,
    /// Resumable uploads in progress on this node (quota and expiry).
    pub uploads: Arc<crate::uploads::Uploads>,
    /// Image decodes and container parses running at once
    /// (`media.max_concurrent_decodes`).
    pub media_decodes: tokio::sync::Semaphore,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
