//! Starting and stopping a node.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use confab_bus::{Bus, LocalBus, LocalPresence};
use confab_store::{CommitRules, DirectMessagePolicy, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::committer::{Committer, Policy};
use crate::config::{Config, DirectMessages};
use crate::hub::Hub;
use crate::presence::PresenceService;
use crate::state::{AppState, Inner};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory or database could not be opened.
    #[error("cannot open storage: {0}")]
    Storage(String),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// Serving failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs a node on an already-bound listener until `shutdown` is cancelled,
/// then drains: stops accepting, closes connections (clients reconnect and
/// resync), commits what was queued, and closes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    crate::metrics::install();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServerError::Storage(format!("{}: {e}", config.data_dir.display())))?;
    let sqlite = SqliteStore::open(&config.data_dir.join("confab.db"))
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
    let hub = Arc::new(Hub::new(rand::random()));
    bus.attach(hub.clone());
    let auth = Arc::new(Auth::new(config.auth.clone()).map_err(ServerError::Config)?);
    let policy = Policy {
        rules: CommitRules {
            direct_messages: match config.chat.direct_messages {
                DirectMessages::Anyone => DirectMessagePolicy::Anyone,
                DirectMessages::Friends => DirectMessagePolicy::FriendsOnly,
            },
        },
        receipts_max_group: config.chat.receipts_max_group,
    };
    let (committer, commit_task) =
        Committer::spawn(store.clone(), bus.clone(), config.max_commit_batch, policy);
    let presence = Arc::new(PresenceService::new(
        store.clone(),
        bus.clone(),
        Arc::new(LocalPresence::new()),
    ));
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let state = AppState(Arc::new(Inner {
        config,
        store,
        bus,
        hub,
        committer,
        presence,
        auth,
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
        open_connections: AtomicUsize::new(0),
    }));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "confab listening");
    let app = crate::http::router(state.clone());
    // Chat frames are small and latency-bound: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;

    // Connection tasks saw the same token and are closing their sockets.
    state.connections.close();
    if tokio::time::timeout(grace, state.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not close within the grace period");
    }
    // Dropping the last committer handle lets the commit task finish what is
    // queued and end.
    drop(state);
    if tokio::time::timeout(grace, commit_task).await.is_err() {
        tracing::warn!("commit queue did not drain within the grace period");
    }
    sqlite.close().await;
    tracing::info!("confab stopped");
    Ok(())
}
