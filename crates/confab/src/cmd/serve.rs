//! `confab serve`: layered configuration (defaults, then TOML file, then
//! `CONFAB_*` environment variables and flags) and a signal-driven shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use confab_server::Config;
use tokio_util::sync::CancellationToken;

/// Flags of `confab serve`. Every flag can also be set by the environment
/// variable named beside it, and in the TOML file given by `--config`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with settings (see confab.example.toml).
    #[arg(long, env = "CONFAB_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Address for HTTP and WebSocket [default: 127.0.0.1:8080].
    #[arg(long, env = "CONFAB_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for the database and blobs [default: ./confab-data].
    #[arg(long, env = "CONFAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://user@host:5432/db`) for cluster mode
    /// [default: SQLite in the data dir].
    #[arg(long, env = "CONFAB_DATABASE")]
    database: Option<String>,
    /// NATS URL (`nats://host:4222`) for cluster mode [default: in-process bus].
    #[arg(long, env = "CONFAB_BUS")]
    bus: Option<String>,
    /// This node's name in the cluster [default: random].
    #[arg(long, env = "CONFAB_NODE_ID")]
    node_id: Option<String>,
    /// Largest WebSocket frame answered as a request [default: 65536].
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Largest message text in bytes [default: 16384].
    #[arg(long, env = "CONFAB_MAX_TEXT_BYTES")]
    max_text_bytes: Option<usize>,
    /// Largest HTTP request body in bytes [default: 1048576].
    #[arg(long, env = "CONFAB_MAX_HTTP_BODY_BYTES")]
    max_http_body_bytes: Option<usize>,
    /// Sustained sends per second per connection [default: 50].
    #[arg(long, env = "CONFAB_SEND_RATE")]
    send_rate: Option<f64>,
    /// Burst of sends above the rate [default: 200].
    #[arg(long, env = "CONFAB_SEND_BURST")]
    send_burst: Option<f64>,
    /// Frames queued per connection before it is dropped as too slow [default: 4096].
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE_FRAMES")]
    outbound_queue_frames: Option<usize>,
    /// Most WebSocket connections on this node [default: 19500].
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most WebSocket connections of one user on this node [default: 64].
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_USER")]
    max_connections_per_user: Option<usize>,
    /// Most WebSocket connections of one device on this node [default: 16].
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_DEVICE")]
    max_connections_per_device: Option<usize>,
    /// Seconds a new connection has to send its request header [default: 10].
    #[arg(long, env = "CONFAB_HEADER_TIMEOUT_S")]
    header_timeout_s: Option<u64>,
    /// Seconds without a byte after which an HTTP connection closes [default: 75].
    #[arg(long, env = "CONFAB_IDLE_TIMEOUT_S")]
    idle_timeout_s: Option<u64>,
    /// Seconds a request body may stall before it is cut off [default: 30].
    #[arg(long, env = "CONFAB_BODY_TIMEOUT_S")]
    body_timeout_s: Option<u64>,
    /// Serve /metrics, without a token, on this separate address (e.g.
    /// 127.0.0.1:9090) [default: none].
    #[arg(long, env = "CONFAB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve /metrics on the main address to `Authorization: Bearer TOKEN`
    /// [default: none].
    #[arg(long, env = "CONFAB_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Messages per conversation in one sync answer [default: 200].
    #[arg(long, env = "CONFAB_SYNC_BATCH")]
    sync_batch: Option<u32>,
    /// WebSocket permessage-deflate when the client offers it: on or off
    /// [default: on].
    #[arg(long, env = "CONFAB_WS_COMPRESSION", value_parser = parse_ws_compression)]
    ws_compression: Option<confab_server::config::WsCompression>,
    /// Outgoing WebSocket frames shorter than this go uncompressed
    /// [default: 256].
    #[arg(long, env = "CONFAB_WS_COMPRESSION_MIN_BYTES")]
    ws_compression_min_bytes: Option<usize>,
    /// Server ping interval in seconds [default: 20].
    #[arg(long, env = "CONFAB_HEARTBEAT_S")]
    heartbeat_s: Option<u64>,
    /// Cluster: seconds a dead node's users stay online [default: 15].
    #[arg(long, env = "CONFAB_PRESENCE_TTL_S")]
    presence_ttl_s: Option<u64>,
    /// Most writes per group commit [default: 512].
    #[arg(long, env = "CONFAB_MAX_COMMIT_BATCH")]
    max_commit_batch: Option<usize>,
    /// Access token lifetime in seconds [default: 3600].
    #[arg(long, env = "CONFAB_ACCESS_TTL_S")]
    access_ttl_s: Option<u64>,
    /// argon2id memory cost in KiB [default: 19456].
    #[arg(long, env = "CONFAB_ARGON2_MEMORY_KIB")]
    argon2_memory_kib: Option<u32>,
    /// New accounts one client address may register per hour [default: 20].
    #[arg(long, env = "CONFAB_REGISTRATIONS_PER_HOUR")]
    registrations_per_hour: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed, comma-separated
    /// addresses or CIDR ranges (e.g. 10.0.0.0/8) [default: none].
    #[arg(long, env = "CONFAB_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// argon2id passes [default: 2].
    #[arg(long, env = "CONFAB_ARGON2_ITERATIONS")]
    argon2_iterations: Option<u32>,
    /// Who may send direct messages: anyone or friends [default: anyone].
    #[arg(long, env = "CONFAB_DIRECT_MESSAGES", value_parser = parse_direct_messages)]
    direct_messages: Option<confab_server::config::DirectMessages>,
    /// Most members per group, owner included [default: 10000].
    #[arg(long, env = "CONFAB_MAX_GROUP_MEMBERS")]
    max_group_members: Option<i64>,
    /// Milliseconds after which an unrefreshed `typing start` ends [default: 6000].
    #[arg(long, env = "CONFAB_TYPING_TIMEOUT_MS")]
    typing_timeout_ms: Option<u64>,
    /// Where media blobs live: a directory or `s3://bucket/prefix`
    /// (credentials from AWS_* variables) [default: <data-dir>/blobs].
    #[arg(long, env = "CONFAB_BLOBS")]
    blobs: Option<String>,
    /// Largest media upload in bytes [default: 104857600].
    #[arg(long, env = "CONFAB_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// Largest image in pixels; bigger ones are refused before decoding
    /// [default: 50000000].
    #[arg(long, env = "CONFAB_MAX_IMAGE_PIXELS")]
    max_image_pixels: Option<u64>,
    /// Seconds an unanswered call rings before it ends as missed [default: 45].
    #[arg(long, env = "CONFAB_CALL_RING_TIMEOUT_S")]
    call_ring_timeout_s: Option<u64>,
    /// A STUN or TURN server for calls (`stun:host:3478`,
    /// `turn:host:3478?transport=udp`); repeat for more [default: none].
    #[arg(long = "turn-url", env = "CONFAB_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`: TURN credentials are made with it
    /// [default: none].
    #[arg(long, env = "CONFAB_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Seconds the TURN credentials handed out last [default: 86400].
    #[arg(long, env = "CONFAB_TURN_TTL_S")]
    turn_ttl_s: Option<u64>,
    /// PEM certificate (chain allowed) to serve HTTPS and WSS; with
    /// --tls-key. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "CONFAB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CONFAB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL users reach this server at, e.g. https://chat.example.com
    /// (OpenID Connect redirect URIs are made from it) [default: the
    /// listen address].
    #[arg(long, env = "CONFAB_PUBLIC_URL")]
    public_url: Option<String>,
    /// An OpenID Connect provider's issuer URL to offer sign-in with;
    /// repeat (or comma-separate) for several, each with its own
    /// --oidc-client-id and, in the same order, --oidc-client-secret,
    /// --oidc-name and --oidc-id [default: none].
    #[arg(
        long = "oidc-issuer",
        env = "CONFAB_OIDC_ISSUER",
        value_delimiter = ','
    )]
    oidc_issuers: Vec<String>,
    /// Client id Confab is registered under at each --oidc-issuer.
    #[arg(
        long = "oidc-client-id",
        env = "CONFAB_OIDC_CLIENT_ID",
        value_delimiter = ','
    )]
    oidc_client_ids: Vec<String>,
    /// Client secret for each --oidc-issuer (empty for a public client).
    #[arg(
        long = "oidc-client-secret",
        env = "CONFAB_OIDC_CLIENT_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    oidc_client_secrets: Vec<String>,
    /// Button name of each --oidc-issuer ("Sign in with NAME") [default: its host].
    #[arg(long = "oidc-name", env = "CONFAB_OIDC_NAME", value_delimiter = ',')]
    oidc_names: Vec<String>,
    /// Id of each --oidc-issuer in URLs and `confab login --oidc ID`
    /// [default: made from the name].
    #[arg(long = "oidc-id", env = "CONFAB_OIDC_ID", value_delimiter = ',')]
    oidc_ids: Vec<String>,
    /// Serve the browser app from this folder instead of the built-in copy
    /// (while working on it: edits show on reload).
    #[arg(long, env = "CONFAB_WEB_DIR")]
    web_dir: Option<PathBuf>,
    /// Serve P2P peers (relay v2, rendezvous, mailbox) on these libp2p
    /// multiaddrs, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; off by default).
    #[arg(long = "p2p-listen", env = "CONFAB_P2P_LISTEN", value_delimiter = ',')]
    p2p_listen: Vec<String>,
}

fn parse_ws_compression(s: &str) -> Result<confab_server::config::WsCompression, String> {
    use confab_server::config::WsCompression;
    match s {
        "on" => Ok(WsCompression::On),
        "off" => Ok(WsCompression::Off),
        other => Err(format!("{other:?} is not on or off")),
    }
}

fn parse_direct_messages(s: &str) -> Result<confab_server::config::DirectMessages, String> {
    use confab_server::config::DirectMessages;
    match s {
        "anyone" => Ok(DirectMessages::Anyone),
        "friends" => Ok(DirectMessages::Friends),
        other => Err(format!("{other:?}: expected anyone or friends")),
    }
}

impl ServeArgs {
    /// Builds the effective configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $( if let Some(v) = self.$flag.clone() { c.$($field).+ = v; } )*
            };
        }
        overlay! {
            listen => listen,
            data_dir => data_dir,
            max_frame_bytes => limits.max_frame_bytes,
            max_text_bytes => limits.max_text_bytes,
            max_http_body_bytes => limits.max_http_body_bytes,
            send_rate => limits.send_rate_per_s,
            send_burst => limits.send_burst,
            outbound_queue_frames => limits.outbound_queue_frames,
            max_connections => limits.max_connections,
            max_connections_per_user => limits.max_connections_per_user,
            max_connections_per_device => limits.max_connections_per_device,
            header_timeout_s => http.header_timeout_s,
            idle_timeout_s => http.idle_timeout_s,
            body_timeout_s => http.body_timeout_s,
            sync_batch => limits.sync_batch,
            heartbeat_s => heartbeat_s,
            ws_compression => ws.compression,
            ws_compression_min_bytes => ws.compression_min_bytes,
            presence_ttl_s => presence_ttl_s,
            max_commit_batch => max_commit_batch,
            access_ttl_s => auth.access_ttl_s,
            argon2_memory_kib => auth.argon2_memory_kib,
            argon2_iterations => auth.argon2_iterations,
            registrations_per_hour => auth.registrations_per_hour,
            direct_messages => chat.direct_messages,
            max_group_members => chat.max_group_members,
            typing_timeout_ms => chat.typing_timeout_ms,
            call_ring_timeout_s => chat.call_ring_timeout_s,
            turn_ttl_s => calls.turn_ttl_s,
            max_upload_bytes => media.max_upload_bytes,
            max_image_pixels => media.max_image_pixels,
        }
        // Settings that are optional in the file too.
        if let Some(v) = &self.database {
            c.database = Some(v.clone());
        }
        if let Some(v) = &self.bus {
            c.bus = Some(v.clone());
        }
        if let Some(v) = &self.node_id {
            c.node_id = Some(v.clone());
        }
        if let Some(v) = &self.tls_cert {
            c.tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls_key = Some(v.clone());
        }
        if let Some(v) = &self.web_dir {
            c.web_dir = Some(v.clone());
        }
        if !self.trusted_proxies.is_empty() {
            c.http.trusted_proxies = self.trusted_proxies.clone();
        }
        if let Some(v) = self.metrics_listen {
            c.http.metrics_listen = Some(v);
        }
        if let Some(v) = &self.metrics_token {
            c.http.metrics_token = Some(confab_server::config::Secret::new(v.clone()));
        }
        if !self.turn_urls.is_empty() {
            c.calls.turn_urls = self.turn_urls.clone();
        }
        if let Some(v) = &self.turn_secret {
            c.calls.turn_secret = Some(confab_server::config::Secret::new(v.clone()));
        }
        if let Some(v) = &self.blobs {
            c.media.blobs = Some(v.clone());
        }
        if !self.p2p_listen.is_empty() {
            c.p2p.listen = self.p2p_listen.clone();
        }
        if let Some(v) = &self.public_url {
            c.public_url = Some(v.clone());
        }
        self.overlay_oidc(&mut c)?;
        Ok(c)
    }

    /// Providers from flags are added after those of the TOML file.
    fn overlay_oidc(&self, c: &mut Config) -> anyhow::Result<()> {
        let n = self.oidc_issuers.len();
        if self.oidc_client_ids.len() != n {
            anyhow::bail!(
                "give one --oidc-client-id per --oidc-issuer ({n} issuers, {} client ids)",
                self.oidc_client_ids.len()
            );
        }
        for (what, len) in [
            ("--oidc-client-secret", self.oidc_client_secrets.len()),
            ("--oidc-name", self.oidc_names.len()),
            ("--oidc-id", self.oidc_ids.len()),
        ] {
            if len > n {
                anyhow::bail!("more {what} than --oidc-issuer ({len} for {n})");
            }
        }
        for (i, issuer) in self.oidc_issuers.iter().enumerate() {
            let at = |v: &Vec<String>| v.get(i).cloned().unwrap_or_default();
            let secret = at(&self.oidc_client_secrets);
            c.oidc
                .providers
                .push(confab_server::config::OidcProviderConfig {
                    id: at(&self.oidc_ids),
                    name: at(&self.oidc_names),
                    issuer: issuer.clone(),
                    client_id: at(&self.oidc_client_ids),
                    client_secret: (!secret.is_empty())
                        .then(|| confab_server::config::Secret::new(secret)),
                    scopes: vec!["profile".to_owned(), "email".to_owned()],
                });
        }
        Ok(())
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    // One line on stdout that scripts (and `confab bench`) can wait for.
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("confab listening on {scheme}://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if !config.p2p.listen.is_empty() {
        start_p2p_relay(&config, shutdown.clone()).await?;
    }
    confab_server::run(listener, config, shutdown).await?;
    Ok(())
}

/// The P2P relay, rendezvous point and mailbox beside the HTTP server
/// (data in `<data_dir>/p2p`); one stdout line per address for scripts.
async fn start_p2p_relay(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let p = &config.p2p;
    let listen = p
        .listen
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("--p2p-listen {a}: not a multiaddr"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut relay = confab_p2p::relay::RelayConfig::new(config.data_dir.join("p2p"), listen);
    relay.max_reservations = p.max_reservations;
    relay.max_circuits = p.max_circuits;
    relay.max_circuits_per_peer = p.max_circuits_per_peer;
    relay.max_circuit_duration = std::time::Duration::from_secs(p.max_circuit_duration_s);
    relay.max_circuit_bytes = p.max_circuit_bytes;
    relay.mailbox_ttl = std::time::Duration::from_secs(p.mailbox_ttl_s);
    relay.mailbox_quota = p.mailbox_quota;
    relay.rendezvous_min_ttl = std::time::Duration::from_secs(p.rendezvous_min_ttl_s);
    let info = confab_p2p::relay::start(relay, shutdown.cancelled_owned()).await?;
    for addr in info.addrs {
        println!("confab p2p relay listening on {addr}");
    }
    Ok(())
}

async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested; draining");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented example file in the repo must parse and say exactly
    /// what the defaults are, so it cannot drift from the code.
    #[test]
    fn example_config_is_the_defaults() {
        let text = include_str!("../../../../confab.example.toml");
        let parsed: Config = toml::from_str(text).expect("example parses");
        assert_eq!(
            toml::to_string(&parsed).expect("serialize"),
            toml::to_string(&Config::default()).expect("serialize")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\n[limits]\nmax_text_bytes = 10\n",
        )
        .expect("write");
        let args = ServeArgs::try_parse_from_for_test(&[
            "--config",
            path.to_str().expect("utf8"),
            "--max-text-bytes",
            "20",
        ]);
        let c = args.config().expect("config");
        assert_eq!(c.listen.port(), 9999, "from the file");
        assert_eq!(c.limits.max_text_bytes, 20, "flag wins");
        assert!(
            toml::from_str::<Config>("nonsense_key = 1").is_err(),
            "unknown keys are errors"
        );
    }

    impl ServeArgs {
        fn try_parse_from_for_test(args: &[&str]) -> ServeArgs {
            use clap::Parser;
            #[derive(Parser)]
            struct Wrapper {
                #[command(flatten)]
                args: ServeArgs,
            }
            let argv = std::iter::once("serve").chain(args.iter().copied());
            Wrapper::try_parse_from(argv).expect("parse").args
        }
    }
}
