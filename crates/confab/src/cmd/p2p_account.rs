//! `confab p2p register` and `confab p2p find`: a peer that also has a
//! server account registers its device key there (the account's device
//! with `device_public_key` = the peer's Ed25519 key, DESIGN §2), so that
//! people who trust that server can find it by username and add it as a
//! contact: its PeerId is the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use confab_p2p::store::Contact;
use confab_sdk::Client;

use super::p2p::{add_contact, CommonArgs};

/// The server session a peer's `register` left, in its data dir.
const SESSION_FILE: &str = "server-session.json";

/// `confab p2p register USERNAME --server URL`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The server account's username.
    username: String,
    /// The server's base URL.
    #[arg(long)]
    server: String,
    /// The account's password [default: $CONFAB_PASSWORD, else read from stdin].
    #[arg(long, env = "CONFAB_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// `confab p2p find USERNAME [--add]`.
#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The username to look up on the server this peer registered with.
    username: String,
    /// Add the user's peers as contacts (named by the account's display
    /// name; with `--relay`, looked up at that relay's rendezvous point).
    #[arg(long)]
    add: bool,
    /// Name to give the contact instead of the username.
    #[arg(long)]
    name: Option<String>,
}

/// The peer's Ed25519 public key as the server stores device keys
/// (base64 of the 32 raw bytes), and its PeerId.
fn public_key_b64(dir: &Path) -> anyhow::Result<(String, String)> {
    let key = confab_p2p::identity::load_or_create(dir)?;
    let raw = confab_p2p::identity::ed25519_public(&key)
        .context("the peer's key is not an Ed25519 key")?;
    Ok((B64.encode(raw), key.public().to_peer_id().to_base58()))
}

/// The PeerId of a device key as the server hands it out (`None`: not a
/// 32-byte Ed25519 key in base64).
pub fn peer_of_device_key(b64: &str) -> Option<confab_p2p::PeerId> {
    confab_p2p::identity::peer_of_ed25519(&B64.decode(b64).ok()?)
}

fn session_path(dir: &Path) -> PathBuf {
    dir.join(SESSION_FILE)
}

/// `register`: logs in as a new device of the account whose device key is
/// this peer's, and keeps the session for `find`.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let dir = args.common.data_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (public, peer) = public_key_b64(&dir)?;
    let password = super::password(args.password)?;
    let client = Client::new(&args.server);
    let session = client
        .login_with_key(&args.username, &password, Some("confab p2p"), Some(&public))
        .await?;
    crate::session_file::save(&session_path(&dir), &session)?;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "peer_id": peer, "user_id": session.user.id,
                "device_id": session.device_id, "server": args.server,
            })
        );
    } else {
        println!(
            "registered {peer} as device {} of {} on {}",
            session.device_id, session.user.username, args.server
        );
    }
    Ok(())
}

/// `find`: the user's devices with a key on the server this peer
/// registered with, as PeerIds; `--add` makes them contacts.
pub async fn find(args: FindArgs) -> anyhow::Result<()> {
    let dir = args.common.data_dir()?;
    let path = session_path(&dir);
    if !path.exists() {
        bail!(
            "this peer has no server account: run `confab p2p register USERNAME --server URL` first"
        );
    }
    let session = crate::session_file::load(&path)?;
    let client = Client::from_session(session);
    let mut watch = client.watch_session();
    let wanted = args.username.trim_start_matches('@');
    let user = client
        .search_users(wanted)
        .await?
        .into_iter()
        .find(|u| u.username.eq_ignore_ascii_case(wanted))
        .with_context(|| format!("no user named {wanted} on that server"))?;
    let devices = client.devices(user.id).await?;
    // Tokens refreshed meanwhile are kept for the next call.
    if watch.has_changed().unwrap_or(false) {
        if let Some(s) = watch.borrow_and_update().clone() {
            crate::session_file::save(&path, &s)?;
        }
    }
    let peers: Vec<(i64, confab_p2p::PeerId)> = devices
        .iter()
        .filter_map(|d| {
            let key = d.public_key.as_deref()?;
            Some((d.device_id, peer_of_device_key(key)?))
        })
        .collect();
    if peers.is_empty() {
        bail!("{wanted} has no device with a key on that server");
    }
    // The name people chose to be shown by (Chinese, say), else the
    // username.
    let shown = if user.display_name.trim().is_empty() {
        user.username.clone()
    } else {
        user.display_name.clone()
    };
    let name = args.name.clone().unwrap_or(shown);
    for (i, (device, peer)) in peers.iter().enumerate() {
        if args.add {
            let contact = Contact {
                peer_id: peer.to_base58(),
                name: if i == 0 {
                    name.clone()
                } else {
                    format!("{name}#{device}")
                },
                addrs: Vec::new(),
                relay: args.common.relay.as_ref().map(ToString::to_string),
            };
            add_contact(&args.common, contact).await?;
        } else if args.common.json {
            println!(
                "{}",
                serde_json::json!({"username": user.username, "device_id": device, "peer_id": peer.to_base58()})
            );
        } else {
            println!("{} device {device}: {peer}", user.username);
        }
    }
    Ok(())
}
