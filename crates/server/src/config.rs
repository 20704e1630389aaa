//! The server's typed configuration. The binary fills it from flags,
//! `CONFAB_*` environment variables and an optional TOML file; every field
//! has a default that works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `confab serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// Folder for the SQLite file and blobs.
    pub data_dir: PathBuf,
    /// `postgres://…` to keep state in PostgreSQL (cluster mode); none for
    /// the embedded SQLite file in `data_dir`.
    pub database: Option<String>,
    /// `nats://…` to route between nodes over NATS (cluster mode); none
    /// for the in-process bus.
    pub bus: Option<String>,
    /// This node's name in the cluster (presence entries, logs); defaults
    /// to a random one.
    pub node_id: Option<String>,
    /// Size, rate and queue limits.
    pub limits: Limits,
    /// Token lifetimes and password hashing cost.
    pub auth: AuthConfig,
    /// Social rules: who may message whom, group size, typing, receipts.
    pub chat: ChatConfig,
    /// Uploads: where blobs live, size limit, quota.
    pub media: MediaConfig,
    /// HTTP connection timeouts and the metrics endpoint.
    pub http: HttpConfig,
    /// Peer-to-peer relay, rendezvous and mailbox (off unless `listen` is set).
    pub p2p: P2pConfig,
    /// STUN/TURN servers handed to calling clients.
    pub calls: CallsConfig,
    /// WebSocket compression (permessage-deflate).
    pub ws: WsConfig,
    /// Server ping interval in seconds; a connection silent for three
    /// intervals is closed.
    pub heartbeat_s: u64,
    /// Most writes committed in one transaction.
    pub max_commit_batch: usize,
    /// Seconds to wait for connections to drain on shutdown.
    pub shutdown_grace_s: u64,
    /// Cluster mode: how long a node's users stay online after its last
    /// presence heartbeat (heartbeats every third of it); a dead node's
    /// users go offline for their friends within this plus a third.
    pub presence_ttl_s: u64,
    /// Serve the browser app from this folder instead of the copy built
    /// into the binary (for working on the app without rebuilding).
    pub web_dir: Option<PathBuf>,
    /// PEM certificate (chain allowed) for HTTPS and WSS on `listen`;
    /// with `tls_key`. Reloaded when the file changes or on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The URL users reach this server at (scheme, host, port, no path),
    /// e.g. `https://chat.example.com`: OpenID Connect redirect URIs are
    /// made from it. Default: `http(s)://` and the address the listener is
    /// bound to.
    pub public_url: Option<String>,
    /// Sign-in with OpenID Connect providers.
    pub oidc: OidcConfig,
}

/// OpenID Connect sign-in (see docs/operations.md for registering Confab
/// at a provider).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The providers users may sign in with; none: OIDC is off.
    pub providers: Vec<OidcProviderConfig>,
    /// Seconds a sign-in may take at the provider (the `state`, PKCE
    /// verifier and nonce are kept this long), and a first sign-in's
    /// signup token lives.
    pub flow_ttl_s: u64,
    /// Seconds the one-time code handed to the client after the provider's
    /// redirect lives.
    pub code_ttl_s: u64,
    /// Most sign-ins in progress (flows, codes and signups together, all
    /// nodes); more: 503 `unavailable`.
    pub max_pending: u64,
    /// Seconds a provider's discovery document and keys are cached.
    pub discovery_ttl_s: u64,
    /// Seconds any one request to a provider may take.
    pub provider_timeout_s: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            providers: Vec::new(),
            flow_ttl_s: 600,
            code_ttl_s: 120,
            max_pending: 10_000,
            discovery_ttl_s: 300,
            provider_timeout_s: 10,
        }
    }
}

/// One OpenID Connect provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short id in URLs (`a-z`, `0-9`, `-`, `_`); default: made from the
    /// name, else `oidc`, `oidc2`, ...
    #[serde(default)]
    pub id: String,
    /// What the button says: "Sign in with {name}"; default: the issuer's host.
    #[serde(default)]
    pub name: String,
    /// The issuer URL; its `/.well-known/openid-configuration` is read.
    pub issuer: String,
    /// The client id Confab is registered under at the provider.
    pub client_id: String,
    /// The client secret; none for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

/// Limits on what clients may send and how much the server buffers for them.
/// What happens when each is hit is documented in docs/protocol.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame the server reads as a request; larger ones get
    /// `message_too_large` and the connection stays.
    pub max_frame_bytes: usize,
    /// Largest `text` (and caption) in a message body.
    pub max_text_bytes: usize,
    /// Largest HTTP request body.
    pub max_http_body_bytes: usize,
    /// Sustained sends per second per connection (token bucket).
    pub send_rate_per_s: f64,
    /// Burst of sends allowed above the sustained rate.
    pub send_burst: f64,
    /// Frames queued for one connection before it counts as too slow and is
    /// closed (it resyncs on reconnect; nothing is lost).
    pub outbound_queue_frames: usize,
    /// Bytes queued for one connection before it counts as too slow.
    pub outbound_queue_bytes: usize,
    /// Most messages per conversation in one sync answer (`has_more` says
    /// when more remain).
    pub sync_batch: u32,
    /// Largest history page.
    pub history_page_max: u32,
    /// Most WebSocket connections this node holds; more get HTTP 503.
    pub max_connections: usize,
    /// Most WebSocket connections one user holds on this node (all their
    /// devices); more get HTTP 503 `unavailable`.
    pub max_connections_per_user: usize,
    /// Most WebSocket connections one device (one access token's device)
    /// holds on this node; more get HTTP 503 `unavailable`.
    pub max_connections_per_device: usize,
    /// Largest `payload` of a `call` signal, in bytes of its JSON;
    /// larger: `message_too_large`.
    pub max_signal_bytes: usize,
    /// MLS KeyPackages one device may keep in stock on the server (the
    /// last-resort one not counted); an upload past it: 409
    /// `key_package_limit`.
    pub max_key_packages_per_device: i64,
    /// Largest MLS KeyPackage accepted, in bytes; larger: 400
    /// `invalid_key_package`.
    pub max_key_package_bytes: usize,
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Access token lifetime in seconds.
    pub access_ttl_s: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_ttl_s: u64,
    /// argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// argon2id passes.
    pub argon2_iterations: u32,
    /// Failed logins an account may have before each further one locks it
    /// for a growing delay (1 s, 2 s, 4 s, …): 429 `rate_limited` with
    /// `Retry-After`.
    pub login_free_failures: u32,
    /// The same for one client address, over all accounts.
    pub address_free_failures: u32,
    /// The longest such delay, in seconds.
    pub login_max_delay_s: u64,
    /// Registrations one client address may make per hour (as a burst too).
    pub registrations_per_hour: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("confab-data"),
            database: None,
            bus: None,
            node_id: None,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            chat: ChatConfig::default(),
            media: MediaConfig::default(),
            http: HttpConfig::default(),
            p2p: P2pConfig::default(),
            calls: CallsConfig::default(),
            ws: WsConfig::default(),
            heartbeat_s: 20,
            max_commit_batch: 512,
            shutdown_grace_s: 10,
            presence_ttl_s: 15,
            web_dir: None,
            tls_cert: None,
            tls_key: None,
            public_url: None,
            oidc: OidcConfig::default(),
        }
    }
}

/// What the server offers P2P peers (issue 11; run by the `confab` binary
/// next to the HTTP server, in crates/p2p/src/relay.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// libp2p multiaddrs to listen on; empty: no relay, rendezvous or mailbox.
    pub listen: Vec<String>,
    /// Most relay reservations at once.
    pub max_reservations: usize,
    /// Most relayed circuits at once.
    pub max_circuits: usize,
    /// Most circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Longest a relayed circuit lives, in seconds.
    pub max_circuit_duration_s: u64,
    /// Most bytes relayed per circuit.
    pub max_circuit_bytes: u64,
    /// How long the mailbox keeps an envelope, in seconds.
    pub mailbox_ttl_s: u64,
    /// Most envelopes the mailbox holds per recipient.
    pub mailbox_quota: u64,
    /// Shortest rendezvous registration the point grants, in seconds (a
    /// peer asking for less is refused; libp2p's minimum is 7200).
    pub rendezvous_min_ttl_s: u64,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: Vec::new(),
            max_reservations: 1024,
            max_circuits: 512,
            max_circuits_per_peer: 8,
            max_circuit_duration_s: 600,
            max_circuit_bytes: 64 * 1024 * 1024,
            mailbox_ttl_s: 14 * 24 * 3600,
            mailbox_quota: 10_000,
            rendezvous_min_ttl_s: 7200,
        }
    }
}

/// Whether the WebSocket gateway agrees to permessage-deflate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsCompression {
    /// Never: every frame goes as it is, whatever the client offers.
    Off,
    /// When the client offers it (browsers and the SDK do).
    #[default]
    On,
}

/// WebSocket compression (RFC 7692 permessage-deflate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Agree to permessage-deflate when a client offers it.
    pub compression: WsCompression,
    /// Frames the server sends that are shorter than this many bytes go
    /// uncompressed (deflating them costs more CPU than it saves bytes).
    pub compression_min_bytes: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            compression: WsCompression::On,
            compression_min_bytes: 256,
        }
    }
}

/// Who may start direct conversations with whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectMessages {
    /// Anyone may message anyone who has not blocked them.
    #[default]
    Anyone,
    /// Only friends; a stranger's send is refused with `not_friends`.
    Friends,
}

/// Social rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Direct-message policy.
    pub direct_messages: DirectMessages,
    /// Most members a group may have (owner included); more: `group_full`.
    pub max_group_members: i64,
    /// Most unanswered friend requests one user may have out; more:
    /// `rate_limited`.
    pub max_pending_friend_requests: u32,
    /// A `typing start` not refreshed for this long ends by itself (the
    /// server sends `typing stop` to the others).
    pub typing_timeout_ms: u64,
    /// Read receipts in groups go to every member only up to this many
    /// members; in bigger groups only the reader's own devices get them
    /// (the counts are in history pages). Delivered receipts go only to
    /// direct conversations.
    pub receipts_max_group: usize,
    /// An unanswered call stops ringing after this many seconds and is
    /// recorded as missed.
    pub call_ring_timeout_s: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            direct_messages: DirectMessages::Anyone,
            max_group_members: 10_000,
            max_pending_friend_requests: 100,
            typing_timeout_ms: 6_000,
            receipts_max_group: 100,
            call_ring_timeout_s: 45,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_text_bytes: 16 * 1024,
            max_http_body_bytes: 1024 * 1024,
            send_rate_per_s: 50.0,
            send_burst: 200.0,
            outbound_queue_frames: 4096,
            outbound_queue_bytes: 8 * 1024 * 1024,
            sync_batch: 200,
            history_page_max: 200,
            max_connections: 19_500,
            max_connections_per_user: 64,
            max_connections_per_device: 16,
            max_signal_bytes: 16 * 1024,
            max_key_packages_per_device: 100,
            max_key_package_bytes: 8192,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_ttl_s: 3600,
            refresh_ttl_s: 30 * 24 * 3600,
            // OWASP's argon2id recommendation (19 MiB, 2 passes).
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            login_free_failures: 5,
            address_free_failures: 20,
            login_max_delay_s: 900,
            registrations_per_hour: 20,
        }
    }
}

impl Limits {
    /// The transport's hard cap: a frame above this closes the connection
    /// (WebSocket close 1009) instead of being answered, so that nobody can
    /// make the server buffer unbounded input.
    pub fn hard_frame_cap(&self) -> usize {
        (self.max_frame_bytes * 4).max(1024 * 1024)
    }
}

/// Media upload settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Where blobs live: a directory, or `s3://bucket/prefix` (endpoint and
    /// credentials from the `AWS_*` environment variables). None:
    /// `<data_dir>/blobs`.
    pub blobs: Option<String>,
    /// Largest upload in bytes; bigger: 413 `media_too_large`.
    pub max_upload_bytes: u64,
    /// Most bytes one user's uploads may take in all; more: 413
    /// `media_too_large` (saying the quota is used up). Resumable uploads
    /// in progress count with their declared length.
    pub user_quota_bytes: u64,
    /// Largest image in pixels (width x height); bigger images are refused
    /// with `media_too_large` before any pixel is decoded.
    pub max_image_pixels: u64,
    /// Images decoded at once on this node (cleaning and thumbnails); the
    /// others wait their turn.
    pub max_concurrent_decodes: usize,
    /// Longest time reading one upload's container (image header, voice
    /// duration) may take before the upload is refused (`bad_request`).
    pub parse_timeout_ms: u64,
    /// Resumable (tus) uploads one user may have in progress at once; more:
    /// 429 `rate_limited`.
    pub max_open_uploads: usize,
    /// A resumable upload not written to for this long is deleted.
    pub upload_expiry_s: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            blobs: None,
            max_upload_bytes: 100 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            max_image_pixels: 50_000_000,
            max_concurrent_decodes: 2,
            parse_timeout_ms: 10_000,
            max_open_uploads: 10,
            upload_expiry_s: 24 * 3600,
        }
    }
}

/// HTTP connection limits (what a slow or silent client may hold) and where
/// Prometheus reads `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A new connection must send a complete request header within this
    /// many seconds, or it is closed.
    pub header_timeout_s: u64,
    /// A connection (other than a WebSocket, which has its heartbeat) with
    /// no byte read or written for this many seconds is closed.
    pub idle_timeout_s: u64,
    /// A request body that sends nothing for this many seconds is cut off
    /// (408 `bad_request`).
    pub body_timeout_s: u64,
    /// Serve `/metrics` (without a token) on this separate address, e.g.
    /// `127.0.0.1:9090`, for a Prometheus on a private network.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main address to requests that carry
    /// `Authorization: Bearer <this token>`. With neither setting,
    /// `/metrics` is not served at all.
    pub metrics_token: Option<Secret>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is
    /// believed: the client address is the last one in that header that is
    /// not a trusted proxy. Others' `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_s: 10,
            idle_timeout_s: 75,
            body_timeout_s: 30,
            metrics_listen: None,
            metrics_token: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The ICE servers of `GET /v1/calls/ice-servers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// `turn:`, `turns:` and `stun:` URLs (`turn:host:3478?transport=udp`).
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret` (`use-auth-secret`): TURN URLs get
    /// short-lived credentials made with it. Without it they are not
    /// handed out (STUN ones still are).
    pub turn_secret: Option<Secret>,
    /// How long those credentials last, in seconds.
    pub turn_ttl_s: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_s: 86_400,
        }
    }
}

/// A secret setting: never printed (`--print-config` and logs show
/// `[redacted]`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for comparing or using it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl Config {
    /// Where blobs live: `media.blobs`, or `<data_dir>/blobs`.
    pub fn blobs_location(&self) -> String {
        match &self.media.blobs {
            Some(b) => b.clone(),
            None => self.data_dir.join("blobs").to_string_lossy().into_owned(),
        }
    }
}
