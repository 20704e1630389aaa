//! Starting and stopping a node.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use confab_bus::{
    Bus, LocalBus, LocalPresence, NatsBus, NatsPresence, NatsPresenceOptions, Presence,
};
use confab_store::{CommitRules, DirectMessagePolicy, PostgresStore, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// The bus could not be set up.
    #[error("cannot set up the bus: {0}")]
    Bus(String),
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
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
    let backend = open_store(&config).await?;
    let store = backend.store();
    let hub = Arc::new(Hub::new(rand::random()));
    let (bus, presence_backend, reconnects) = open_bus(&config, &node_id).await?;
    bus.attach(hub.clone());
    if let Some(mut reconnects) = reconnects {
        // Live deliveries published while this node was cut off from the
        // bus are gone: make every client here reconnect and sync.
        let hub = hub.clone();
        tokio::spawn(async move {
            while reconnects.changed().await.is_ok() {
                let n = hub.resync_all();
                tracing::warn!(connections = n, "bus reconnected; clients asked to resync");
            }
        });
    }
    tracing::info!(node = %node_id, database = backend.name(), bus = if config.bus.is_some() { "nats" } else { "local" }, "node starting");
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
    let calls = crate::chat::calls::Calls::new(
        store.clone(),
        bus.clone(),
        committer.clone(),
        Duration::from_secs(config.chat.call_ring_timeout_s.max(1)),
        config.limits.max_signal_bytes,
    );
    hub.watch_calls(&calls);
    let presence_backend_orphans = presence_backend.take_orphans();
    let presence = Arc::new(PresenceService::new(
        store.clone(),
        bus.clone(),
        presence_backend,
    ));
    if let Some(mut orphans) = presence_backend_orphans {
        // Users of a node that died, found by this node: tell their friends.
        let presence = presence.clone();
        tokio::spawn(async move {
            while let Some(user) = orphans.recv().await {
                presence.orphaned(user).await;
            }
        });
    }
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let blobs = confab_blobs::open(&config.blobs_location())
        .await
        .map_err(|e| ServerError::Storage(format!("blobs: {e}")))?;
    let config_dir = config.data_dir.clone();
    let throttle = crate::throttle::Throttle::new(config.auth.clone());
    let oidc = open_oidc(&config, &listener)?;
    let media_decodes = config.media.max_concurrent_decodes;
    let state = AppState(Arc::new(Inner {
        oidc,
        config,
        store,
        bus,
        hub,
        committer,
        calls,
        presence,
        auth,
        throttle,
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
        open_connections: AtomicUsize::new(0),
        limit_warned_s: std::sync::atomic::AtomicU64::new(0),
        blobs,
        uploads: Arc::new(crate::uploads::Uploads::load(&config_dir.join("tus"))),
        media_decodes: tokio::sync::Semaphore::new(media_decodes.max(1)),
    }));
    tokio::spawn(crate::media::expire_abandoned(state.clone()));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "confab listening");
    let app = app(state.clone());
    if let Some(addr) = state.config.http.metrics_listen {
        let metrics_listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
        let metrics_app = crate::http::metrics_router();
        let (http, token) = (state.config.http.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) =
                crate::listener::serve(metrics_listener, metrics_app, &http, None, token, grace)
                    .await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let tls = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = Arc::new(
                crate::tls::Tls::load(cert, key).map_err(|e| ServerError::Config(e.to_string()))?,
            );
            tokio::spawn(tls.clone().watch(shutdown.clone()));
            Some(tls.acceptor())
        }
        (None, None) => None,
        _ => {
            return Err(ServerError::Config(
                "tls_cert and tls_key go together: give both or neither".into(),
            ))
        }
    };
    crate::listener::serve(
        listener,
        app,
        &state.config.http,
        tls,
        shutdown.clone(),
        grace,
    )
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
    backend.close().await;
    tracing::info!("confab stopped");
    Ok(())
}

/// Every route of a node with its OpenAPI description: the JSON API under
/// `/v1` with media, the WebSocket upgrade and the document itself, and
/// the operational endpoints. This is the one list the router is built
/// from (the browser app is the router's fallback, not a route).
pub fn routes() -> OpenApiRouter<AppState> {
    let v1 = crate::http::api_routes()
        .merge(crate::media::routes())
        .routes(routes!(crate::gateway::upgrade))
        .routes(routes!(crate::openapi::document));
    OpenApiRouter::new()
        .nest("/v1", v1)
        .merge(crate::http::operational_routes())
}

/// The OpenAPI 3.1 document of the HTTP API, as served at
/// `GET /v1/openapi.json`.
pub fn openapi() -> serde_json::Value {
    crate::openapi::finish(routes().into_openapi())
}

/// The whole HTTP surface of a node: [`routes`], the OpenAPI document
/// they describe, and the browser app. Tests can call it with `oneshot`.
pub fn app(state: AppState) -> axum::Router {
    let (routes, api) = routes().split_for_parts();
    let doc = serde_json::to_vec(&crate::openapi::finish(api)).unwrap_or_default();
    let routes = routes.layer(axum::Extension(crate::openapi::Document(doc.into())));
    crate::http::finish(routes, state)
}

/// The store backend chosen by the configuration.
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(s) => Arc::new(s.clone()),
            Backend::Postgres(s) => Arc::new(s.clone()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    async fn close(&self) {
        match self {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }
}

/// How long a starting node keeps trying to reach PostgreSQL or NATS.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// SQLite under `data_dir`, or PostgreSQL when `database` is set (retried
/// while it is not reachable yet, for up to [`STARTUP_PATIENCE`]).
async fn open_store(config: &Config) -> Result<Backend, ServerError> {
    let Some(url) = &config.database else {
        let sqlite = SqliteStore::open(&config.data_dir.join("confab.db"))
            .await
            .map_err(|e| ServerError::Storage(e.to_string()))?;
        return Ok(Backend::Sqlite(sqlite));
    };
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(ServerError::Config(
            "database must be a postgres:// URL".into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    loop {
        // A short acquire timeout: while the database is away, sends are
        // refused with `unavailable` after seconds, not queued for long.
        match PostgresStore::open_with(url, 16, Duration::from_secs(3)).await {
            Ok(pg) => return Ok(Backend::Postgres(pg)),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(ServerError::Storage(e.to_string())),
        }
    }
}

type BusParts = (
    Arc<dyn Bus>,
    Arc<dyn Presence>,
    Option<tokio::sync::watch::Receiver<u64>>,
);

/// The in-process bus, or NATS when `bus` is set (presence in its KV store).
async fn open_bus(config: &Config, node_id: &str) -> Result<BusParts, ServerError> {
    let Some(url) = &config.bus else {
        return Ok((
            Arc::new(LocalBus::new()),
            Arc::new(LocalPresence::new()),
            None,
        ));
    };
    if !url.starts_with("nats://") && !url.starts_with("tls://") {
        return Err(ServerError::Config("bus must be a nats:// URL".into()));
    }
    let ttl = Duration::from_secs(config.presence_ttl_s.max(1));
    let nats = NatsBus::connect(url, node_id)
        .await
        .map_err(|e| ServerError::Bus(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let presence = loop {
        let options = NatsPresenceOptions::with_ttl(ttl);
        match NatsPresence::new(nats.client(), node_id, options).await {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "bus not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(ServerError::Bus(e.to_string())),
        }
    };
    let reconnects = nats.reconnects();
    Ok((Arc::new(nats), Arc::new(presence), Some(reconnects)))
}

/// The OpenID Connect providers, with redirect URIs made from
/// `public_url` (or, without it, from the address the listener is bound to).
fn open_oidc(
    config: &Config,
    listener: &TcpListener,
) -> Result<Option<Arc<crate::oidc::Oidc>>, ServerError> {
    if config.oidc.providers.is_empty() {
        return Ok(None);
    }
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => {
            let scheme = if config.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let addr = listener
                .local_addr()
                .map_err(|e| ServerError::Config(format!("listener address: {e}")))?;
            format!("{scheme}://{addr}")
        }
    };
    let oidc =
        crate::oidc::Oidc::new(config.oidc.clone(), &public_url).map_err(ServerError::Config)?;
    tracing::info!(
        redirect_uri = oidc.redirect_uri(),
        providers = config.oidc.providers.len(),
        "oidc sign-in on"
    );
    Ok(Some(Arc::new(oidc)))
}
