//! The local control socket (`control.sock` in the data dir, mode 0600):
//! while `confab p2p listen` runs, other `confab p2p` commands of the same
//! data dir hand it their work instead of starting a second swarm with the
//! same key. One JSON request per line, one JSON response per line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::node::{EncryptedSend, Node, NodeError};
use crate::store::Contact;

/// File name of the socket inside the data dir.
pub const SOCKET_FILE: &str = "control.sock";

/// How long `group create --encrypted` waits for the members' keys.
const GROUP_KEYS_WAIT: Duration = Duration::from_secs(20);

/// Longest wait a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A request to the running peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Send a text to a contact (name or PeerId), waiting up to `wait_ms`.
    Send {
        /// Contact.
        contact: String,
        /// Text.
        text: String,
        /// Wait for the ack this long.
        wait_ms: u64,
        /// In the encrypted (MLS) conversation with the contact; without
        /// its keys yet, the text waits for them (answered `waiting`).
        #[serde(default)]
        encrypted: bool,
    },
    /// Offer a file to a contact.
    SendFile {
        /// Contact.
        contact: String,
        /// Absolute path.
        path: PathBuf,
        /// Wait for the ack of the envelope this long.
        wait_ms: u64,
        /// In the encrypted (MLS) conversation with the contact (its
        /// details inside the MLS message); may wait for its keys.
        #[serde(default)]
        encrypted: bool,
    },
    /// Add (or update) a contact and dial it.
    Add {
        /// The contact.
        contact: Contact,
    },
    /// Create a group.
    GroupCreate {
        /// Title.
        title: String,
        /// Contacts (names or PeerIds).
        members: Vec<String>,
        /// An encrypted (MLS) group: every member must be online now.
        #[serde(default)]
        encrypted: bool,
    },
    /// Add and remove group members (admin only).
    GroupChange {
        /// Group id.
        group: String,
        /// Contacts to add (names or PeerIds).
        #[serde(default)]
        add: Vec<String>,
        /// Members to remove (names or PeerIds).
        #[serde(default)]
        remove: Vec<String>,
    },
    /// Send a text to a group (encrypted in an encrypted group).
    GroupSend {
        /// Group id.
        group: String,
        /// Text.
        text: String,
    },
    /// Mark what others sent in a conversation (a contact or a group) as read.
    Read {
        /// Contact name or PeerId, or group id or title.
        target: String,
    },
    /// Tell a conversation's connected members that this device is typing.
    Typing {
        /// Contact name or PeerId, or group id or title.
        target: String,
    },
    /// Status and counters.
    Status,
    /// mDNS peers.
    Nearby,
    /// Listen addresses.
    Addrs,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether it worked.
    pub ok: bool,
    /// Result (shape depends on the request).
    #[serde(default)]
    pub result: serde_json::Value,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The socket path for a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Serves the control socket until the node stops. A stale socket file
/// (left by a killed listener) is replaced.
pub async fn serve(node: Node) -> Result<(), NodeError> {
    let listener = claim(node.data_dir()).await?;
    serve_on(listener, node).await
}

/// Binds the data dir's control socket (mode 0600), replacing a stale
/// file; fails when a running peer answers there. Claiming before
/// starting a [`Node`] keeps a second swarm with the same key from ever
/// starting.
pub async fn claim(data_dir: &Path) -> Result<UnixListener, NodeError> {
    let path = socket_path(data_dir);
    if UnixStream::connect(&path).await.is_ok() {
        return Err(NodeError::Transport(format!(
            "another `confab p2p listen` is running on this data dir ({})",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| NodeError::File(path.display().to_string(), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| NodeError::File(path.display().to_string(), e))?;
    Ok(listener)
}

/// Serves requests on a claimed socket until the node stops.
pub async fn serve_on(listener: UnixListener, node: Node) -> Result<(), NodeError> {
    let path = socket_path(node.data_dir());
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| NodeError::File(path.display().to_string(), e))?;
        let node = node.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(&node, req).await,
                    Err(e) => Response {
                        ok: false,
                        result: serde_json::Value::Null,
                        error: Some(format!("bad request: {e}")),
                    },
                };
                let mut out = serde_json::to_vec(&response).unwrap_or_default();
                out.push(b'\n');
                if write.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn handle(node: &Node, req: Request) -> Response {
    match run(node, req).await {
        Ok(result) => Response {
            ok: true,
            result,
            error: None,
        },
        Err(e) => Response {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(e.to_string()),
        },
    }
}

/// Carries out a request on `node` (the listener's, or one a command
/// started for itself): what the control socket answers.
pub async fn run(node: &Node, req: Request) -> Result<serde_json::Value, NodeError> {
    match req {
        Request::Send {
            contact,
            text,
            wait_ms,
            encrypted: true,
        } => {
            let events = node.subscribe();
            let body = serde_json::json!({ "text": text }).to_string();
            let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
            let sent = node
                .send_encrypted_to_contact(&contact, crate::envelope::kind::TEXT, body, wait)
                .await?;
            encrypted_result(node, events, &contact, sent, wait_ms).await
        }
        Request::Send {
            contact,
            text,
            wait_ms,
            encrypted: false,
        } => {
            let events = node.subscribe();
            let env = node.send_text(&contact, &text).await?;
            node.announce_sent(&env);
            deliver_result(node, events, &contact, &env, wait_ms).await
        }
        Request::SendFile {
            contact,
            path,
            wait_ms,
            encrypted: true,
        } => {
            let events = node.subscribe();
            let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
            let sent = node
                .send_encrypted_file_to_contact(&contact, &path, wait)
                .await?;
            encrypted_result(node, events, &contact, sent, wait_ms).await
        }
        Request::SendFile {
            contact,
            path,
            wait_ms,
            encrypted: false,
        } => {
            let events = node.subscribe();
            let env = node.send_file(&contact, &path).await?;
            node.announce_sent(&env);
            deliver_result(node, events, &contact, &env, wait_ms).await
        }
        Request::Add { contact } => {
            node.add_contact(contact).await?;
            Ok(serde_json::json!({}))
        }
        Request::GroupCreate {
            title,
            members,
            encrypted: false,
        } => {
            let id = node.create_group(&title, members).await?;
            Ok(serde_json::json!({ "group": id }))
        }
        Request::GroupCreate {
            title,
            members,
            encrypted: true,
        } => {
            let id = node
                .create_encrypted_group_within(&title, members, GROUP_KEYS_WAIT)
                .await?;
            Ok(serde_json::json!({ "group": id, "encrypted": true }))
        }
        Request::GroupChange { group, add, remove } => {
            let env = node.change_group(&group, add, remove).await?;
            node.announce_sent(&env);
            Ok(serde_json::json!({ "client_msg_id": env.client_msg_id }))
        }
        Request::GroupSend { group, text } => {
            let body = serde_json::json!({ "text": text }).to_string();
            let id = group.clone();
            let encrypted = node.store().call(move |s| s.is_encrypted(&id)).await?;
            let env = if encrypted {
                node.send_encrypted(&group, crate::envelope::kind::TEXT, body)
                    .await?
            } else {
                node.send_to_conversation(&group, crate::envelope::kind::TEXT, body)
                    .await?
            };
            node.announce_sent(&env);
            Ok(serde_json::json!({ "client_msg_id": env.client_msg_id, "encrypted": encrypted }))
        }
        Request::Read { target } => {
            let conv = resolve(node, target).await?;
            let env = node.mark_read(&conv).await?;
            Ok(read_result(env.as_ref()))
        }
        Request::Typing { target } => {
            let conv = resolve(node, target).await?;
            let sent = node.typing(&conv).await?;
            Ok(serde_json::json!({ "conversation_id": conv, "sent": sent }))
        }
        Request::Status => Ok(serde_json::to_value(node.status().await?).unwrap_or_default()),
        Request::Nearby => Ok(serde_json::to_value(node.nearby().await?).unwrap_or_default()),
        Request::Addrs => {
            let addrs: Vec<String> = node
                .listen_addrs()
                .await?
                .iter()
                .map(|a| a.to_string())
                .collect();
            Ok(serde_json::json!(addrs))
        }
    }
}

async fn resolve(node: &Node, target: String) -> Result<String, NodeError> {
    Ok(node
        .store()
        .call(move |s| s.resolve_conversation(&target))
        .await?)
}

/// What `read` answers: the receipt's id and the messages it names
/// (`of` is empty when nothing was unread).
pub fn read_result(receipt: Option<&crate::envelope::Envelope>) -> serde_json::Value {
    match receipt {
        None => serde_json::json!({ "of": [] }),
        Some(env) => {
            let body = env.body_json();
            serde_json::json!({
                "client_msg_id": env.client_msg_id,
                "conversation_id": env.conversation_id,
                "of": body.get("of").cloned().unwrap_or_default(),
            })
        }
    }
}

/// What an encrypted send answers: as [`deliver_result`] with
/// `encrypted: true`, or `waiting` (why) when it waits for keys.
pub async fn encrypted_result(
    node: &Node,
    events: tokio::sync::broadcast::Receiver<crate::node::Event>,
    contact: &str,
    sent: EncryptedSend,
    wait_ms: u64,
) -> Result<serde_json::Value, NodeError> {
    match sent {
        EncryptedSend::Sent(env) => {
            node.announce_sent(&env);
            let mut out = deliver_result(node, events, contact, &env, wait_ms).await?;
            out["encrypted"] = true.into();
            Ok(out)
        }
        EncryptedSend::Waiting {
            conversation_id,
            client_msg_id,
            reason,
        } => Ok(serde_json::json!({
            "client_msg_id": client_msg_id,
            "conversation_id": conversation_id,
            "delivered": false,
            "encrypted": true,
            "waiting": reason,
        })),
    }
}

async fn deliver_result(
    node: &Node,
    events: tokio::sync::broadcast::Receiver<crate::node::Event>,
    contact: &str,
    env: &crate::envelope::Envelope,
    wait_ms: u64,
) -> Result<serde_json::Value, NodeError> {
    let who = contact.to_owned();
    let peer = node
        .store()
        .call(move |s| Ok(s.find_contact(&who)?.peer_id))
        .await?;
    let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
    let delivered = node
        .wait_delivered(events, &peer, &env.client_msg_id, wait)
        .await?;
    Ok(serde_json::json!({
        "client_msg_id": env.client_msg_id,
        "conversation_id": env.conversation_id,
        "delivered": delivered,
    }))
}

/// Sends one request to the listener of `data_dir`; `None` when no
/// listener runs there.
pub async fn request(
    data_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Option<Result<Response, String>> {
    let stream = UnixStream::connect(socket_path(data_dir)).await.ok()?;
    Some(
        tokio::time::timeout(timeout, async move {
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
            line.push(b'\n');
            write.write_all(&line).await.map_err(|e| e.to_string())?;
            let mut lines = BufReader::new(read).lines();
            let answer = lines
                .next_line()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the listener closed the control socket".to_owned())?;
            serde_json::from_str(&answer).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("the listener did not answer in time".into())),
    )
}
