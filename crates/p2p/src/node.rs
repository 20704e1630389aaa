//! The libp2p swarm as an actor: one task owns the `Swarm` and runs its
//! event loop; [`Node`] is the cheap cloneable handle that sends it
//! commands. Store work (verify, store, then ack) runs on the blocking pool
//! and comes back to the loop as an internal message, so the loop never
//! waits on the disk or on a peer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, dcutr, identify, mdns, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, Swarm,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::envelope::{kind, Envelope, Refusal, DEFAULT_MAX_ENVELOPE_BYTES};
use crate::mailbox::{challenge_bytes, MailboxRequest, MailboxResponse, MAILBOX_PROTOCOL};
use crate::store::{
    direct_conversation_id, Contact, FileRecord, SharedStore, Shown, Store, StoreError,
    StoredMessage,
};
mod rendezvous;
mod waiting;

pub use waiting::EncryptedSend;

pub use rendezvous::{RendezvousStatus, NAMESPACE_PREFIX as RENDEZVOUS_NAMESPACE_PREFIX};

use crate::wire::{
    BytesCodec, FileChunk, FileRequest, MsgAck, SyncRequest, SyncResponse, WireError, FILE_CHUNK,
    FILE_PROTOCOL, MSG_PROTOCOL, SYNC_PROTOCOL,
};

/// How a peer is started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Holds `device.key` and `p2p.sqlite` (and received files).
    pub data_dir: PathBuf,
    /// Addresses to listen on (TCP and/or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// A relay (`…/p2p/<relay id>`) to keep a reservation on.
    pub relay: Option<Multiaddr>,
    /// Find LAN peers by mDNS.
    pub mdns: bool,
    /// Display name to set (kept in the store).
    pub name: Option<String>,
    /// Largest envelope accepted.
    pub max_envelope_bytes: usize,
    /// TTL asked for when registering at the relay's rendezvous point
    /// (renewed after two thirds of it).
    pub rendezvous_ttl: Duration,
    /// How often this peer updates its MLS keys in the encrypted
    /// conversations it commits in (before its next send there).
    pub key_update_interval: Duration,
}

impl NodeConfig {
    /// Defaults: no listen addresses, mDNS on, 64 KiB envelopes.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            listen: Vec::new(),
            relay: None,
            mdns: true,
            name: None,
            max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            rendezvous_ttl: rendezvous::DEFAULT_TTL,
            key_update_interval: crate::store::KEY_UPDATE_INTERVAL,
        }
    }
}

/// Node errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The device key.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building the swarm or listening failed.
    #[error("p2p transport: {0}")]
    Transport(String),
    /// The node's task has stopped.
    #[error("the p2p node has stopped")]
    Stopped,
    /// A file could not be read.
    #[error("file {0}: {1}")]
    File(String, std::io::Error),
}

/// Something that happened, for `confab p2p listen` and for waiters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Listening on an address.
    Listening {
        /// The address (with `/p2p/<id>`).
        addr: String,
    },
    /// A LAN peer announced itself by mDNS.
    Discovered {
        /// PeerId.
        peer: String,
        /// Addresses.
        addrs: Vec<String>,
    },
    /// A connection opened.
    Connected {
        /// PeerId.
        peer: String,
        /// `direct` or `relayed`.
        path: String,
        /// The remote address of this connection (a relayed one ends in
        /// `/p2p-circuit/p2p/<peer>`).
        #[serde(default)]
        addr: String,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// PeerId.
        peer: String,
    },
    /// A new message was stored.
    Message {
        /// The message.
        message: StoredMessage,
    },
    /// A member is typing (an ephemeral `typing` envelope arrived).
    Typing {
        /// Who.
        peer: String,
        /// Where.
        conversation_id: String,
    },
    /// A recipient acked one of our envelopes.
    Delivered {
        /// Recipient PeerId.
        to: String,
        /// The envelope's client_msg_id.
        client_msg_id: String,
        /// `direct` or `relayed`.
        path: String,
    },
    /// An envelope was refused and stored nowhere.
    Refused {
        /// Who sent it.
        from: String,
        /// snake_case code.
        code: String,
        /// Why.
        message: String,
    },
    /// This peer sent a message on behalf of another program (through the
    /// data dir's control socket: `confab p2p send` beside a running
    /// `listen` or terminal app), so that whoever shows this peer's
    /// conversations shows it too.
    Sent {
        /// The envelope as stored and queued.
        envelope: Envelope,
    },
    /// A file is on its way: bytes of it fetched by this device
    /// (`direction` `in`) or served to `peer` (`out`) so far, of `size`.
    FileProgress {
        /// SHA-256.
        sha256: String,
        /// The other peer.
        peer: String,
        /// `in` (this device fetches) or `out` (the peer fetches from it).
        direction: String,
        /// Bytes so far.
        bytes: u64,
        /// The file's size.
        size: u64,
    },
    /// A file arrived whole and matched its SHA-256.
    FileReceived {
        /// SHA-256.
        sha256: String,
        /// Where it is.
        path: String,
    },
    /// A hole-punch attempt ended.
    HolePunch {
        /// PeerId.
        peer: String,
        /// Whether it made a direct connection.
        ok: bool,
        /// Why not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// AutoNAT's view changed.
    Nat {
        /// `public`, `private` or `unknown`.
        status: String,
    },
    /// The relay's mailbox was checked.
    MailboxFetched {
        /// Envelopes it handed over.
        count: usize,
    },
    /// The relay accepted our reservation.
    Reservation {
        /// Relay PeerId.
        relay: String,
    },
    /// The relay's rendezvous point accepted our registration (first or
    /// renewed).
    RendezvousRegistered {
        /// The rendezvous point's PeerId.
        rendezvous: String,
        /// `confab/<own PeerId>`.
        namespace: String,
        /// Granted TTL, seconds.
        ttl_s: u64,
        /// The addresses registered.
        addrs: Vec<String>,
    },
    /// A contact was found at a rendezvous point (then it is dialled there).
    RendezvousDiscovered {
        /// The contact's PeerId.
        peer: String,
        /// The rendezvous point's PeerId.
        rendezvous: String,
        /// The addresses it registered.
        addrs: Vec<String>,
    },
    /// A lookup found no registration of a contact at a rendezvous point
    /// (it never registered there, its registration expired, or it
    /// withdrew it when it stopped).
    RendezvousNotFound {
        /// The contact's PeerId.
        peer: String,
        /// The rendezvous point's PeerId.
        rendezvous: String,
    },
    /// A message that waited for a contact's keys was sent encrypted
    /// (see [`Node::send_encrypted_to_contact`]).
    WaitingSent {
        /// The contact.
        peer: String,
        /// The conversation.
        conversation_id: String,
        /// The message's id (the one given when it was queued).
        client_msg_id: String,
    },
}

/// A LAN peer found by mDNS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NearbyPeer {
    /// PeerId.
    pub peer_id: String,
    /// Name from identify, if it connected.
    pub name: String,
    /// Addresses.
    pub addrs: Vec<String>,
    /// Whether it is already a contact.
    pub contact: bool,
}

/// Connectivity counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Envelopes acked by a recipient over a direct connection.
    pub delivered_direct: u64,
    /// … over a relayed connection.
    pub delivered_relayed: u64,
    /// … through a server's mailbox (not built yet: always 0).
    pub delivered_mailbox: u64,
    /// New envelopes received and stored.
    pub received: u64,
    /// Envelopes refused.
    pub refused: u64,
    /// Hole-punch attempts (DCUtR).
    pub holepunch_attempts: u64,
    /// … that made a direct connection.
    pub holepunch_successes: u64,
}

/// Per-contact reachability in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactStatus {
    /// PeerId.
    pub peer_id: String,
    /// Name.
    pub name: String,
    /// `direct`, `relayed` or `offline` (then the outbox holds its envelopes).
    pub path: String,
    /// Envelopes waiting for its ack.
    pub pending: u64,
    /// Remote addresses of the open connections to it (a relayed one
    /// contains `/p2p-circuit`).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Addresses it registered at a rendezvous point, as last found
    /// (until that registration's TTL ends).
    #[serde(default)]
    pub discovered: Vec<String>,
}

/// What `confab p2p status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This device.
    pub peer_id: String,
    /// Display name.
    pub name: String,
    /// Listen addresses.
    pub listen_addrs: Vec<String>,
    /// Confirmed external addresses.
    pub external_addrs: Vec<String>,
    /// AutoNAT's view.
    pub nat: String,
    /// Relay with an accepted reservation.
    pub reservation: Option<String>,
    /// Registration at the relay's rendezvous point (none without `--relay`).
    #[serde(default)]
    pub rendezvous: Option<RendezvousStatus>,
    /// Counters.
    pub counters: Counters,
    /// Contacts.
    pub contacts: Vec<ContactStatus>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay_client: relay::client::Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    msg: request_response::Behaviour<BytesCodec>,
    sync: request_response::Behaviour<BytesCodec>,
    file: request_response::Behaviour<BytesCodec>,
    mailbox: request_response::Behaviour<BytesCodec>,
    /// `/confab/kp/1`: MLS KeyPackages asked of a contact.
    kp: request_response::Behaviour<BytesCodec>,
    rendezvous: libp2p::rendezvous::client::Behaviour,
    candidates: crate::candidates::Candidates,
}

enum Command {
    Flush,
    /// An ephemeral envelope for whichever of these peers are connected;
    /// replies how many it went to.
    Ephemeral(Vec<PeerId>, Vec<u8>, oneshot::Sender<usize>),
    /// Dial a peer at these addresses (and the relay its link names).
    Dial(PeerId, Vec<Multiaddr>, Option<Multiaddr>),
    Status(oneshot::Sender<Status>),
    Nearby(oneshot::Sender<Vec<NearbyPeer>>),
    Addrs(oneshot::Sender<Vec<Multiaddr>>),
    /// Ask a connected peer for a fresh MLS KeyPackage (`/confab/kp/1`).
    /// The request body: `{}` (a KeyPackage, please) or `{"start": kp}`.
    KeyPackage(
        PeerId,
        Vec<u8>,
        oneshot::Sender<Result<serde_json::Value, String>>,
    ),
    /// Close every connection, stop, then answer.
    Shutdown(oneshot::Sender<()>),
}

enum Internal {
    MailboxDelivered(PeerId, String),
    MailboxMore(bool),
    /// Deliver what the outbox holds now.
    Flush,
    Respond(Proto, ResponseChannel<Vec<u8>>, Vec<u8>),
    Send(Proto, PeerId, Vec<u8>, Pendingkey),
    DueRecipients(Vec<Contact>),
    Delivered(PeerId, String, bool),
    Event(Event),
    SyncWith(PeerId, String),
    SyncDone(PeerId, String, bool),
    Download(PeerId, String),
    DownloadStopped(String),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Proto {
    Msg,
    Sync,
    File,
    Mailbox,
    Kp,
}

/// What an outbound request was for.
#[derive(Clone, Debug)]
enum Pendingkey {
    Msg(String),
    Sync(String),
    File(String),
    /// challenge
    MailboxChallenge,
    /// fetch
    MailboxFetch,
    /// ack of fetched envelopes
    MailboxAck,
    /// (recipient, client_msg_id) left in the mailbox
    MailboxPut(PeerId, String),
    /// An ephemeral envelope: nothing waits for its ack.
    Ephemeral,
}

/// The handle to a running peer.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    cmd: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    store: SharedStore,
    key: Keypair,
    data_dir: PathBuf,
    addrs: tokio::sync::watch::Receiver<Vec<Multiaddr>>,
    /// Events from the very start (taken once by [`Node::events_from_start`]).
    first_events: std::sync::Mutex<Option<broadcast::Receiver<Event>>>,
    /// Held while messages waiting for keys are sent (one sender at a time).
    waiting: tokio::sync::Mutex<()>,
}

const AGENT_PREFIX: &str = "confab/";

fn agent_version(name: &str) -> String {
    format!("{AGENT_PREFIX}{} name={name}", env!("CARGO_PKG_VERSION"))
}

fn name_from_agent(agent: &str) -> Option<String> {
    agent
        .strip_prefix(AGENT_PREFIX)?
        .split_once(" name=")
        .map(|(_, n)| n.to_owned())
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn path_name(relayed: bool) -> String {
    if relayed { "relayed" } else { "direct" }.into()
}

impl Node {
    /// Loads the key and the store, builds the swarm, listens and starts
    /// the event loop.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let key = crate::identity::load_or_create(&config.data_dir)?;
        let me = key.public().to_peer_id();
        let store = Store::open(&config.data_dir, me, config.max_envelope_bytes)?;
        if let Some(name) = &config.name {
            store.set_meta("name", name)?;
        }
        let name = store.meta("name")?.unwrap_or_default();
        let mut store = store;
        store.enable_mls(&key)?;
        store.set_key_update_interval(config.key_update_interval);
        let store = SharedStore::new(store);
        let mut swarm = build_swarm(&key, &name, config.mdns)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Transport(format!("listen on {addr}: {e}")))?;
        }
        let mut relay_peer = None;
        if let Some(relay) = &config.relay {
            let peer = relay.iter().find_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            });
            let Some(peer) = peer else {
                return Err(NodeError::Transport(format!(
                    "relay address {relay} must end in /p2p/<relay PeerId>"
                )));
            };
            relay_peer = Some(peer);
            swarm
                .behaviour_mut()
                .autonat
                .add_server(peer, Some(relay.clone()));
            // No listen_on here: the loop makes (and remakes) the reservation.
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (internal_tx, internal_rx) = mpsc::channel(1024);
        let (events, first_events) = broadcast::channel(1024);
        let (addrs_tx, addrs_rx) = tokio::sync::watch::channel(Vec::new());
        let node = Node {
            inner: Arc::new(NodeInner {
                cmd: cmd_tx,
                events: events.clone(),
                store: store.clone(),
                key: key.clone(),
                data_dir: config.data_dir.clone(),
                addrs: addrs_rx,
                first_events: std::sync::Mutex::new(Some(first_events)),
                waiting: tokio::sync::Mutex::new(()),
            }),
        };
        waiting::spawn_retry(&node);
        let state = Loop {
            swarm,
            relay_listener: None,
            last_reserve: None,
            key: key.clone(),
            mailbox_more: false,
            store,
            me,
            name,
            data_dir: config.data_dir.clone(),
            max_envelope_bytes: config.max_envelope_bytes,
            events,
            internal_tx,
            connections: HashMap::new(),
            upgraded: HashMap::new(),
            remote_addrs: HashMap::new(),
            inflight: HashMap::new(),
            kp_waiting: HashMap::new(),
            kp_answered: HashMap::new(),
            inflight_keys: HashSet::new(),
            syncing: HashSet::new(),
            downloading: HashSet::new(),
            last_dial: HashMap::new(),
            nearby: HashMap::new(),
            names: HashMap::new(),
            counters: Counters::default(),
            nat: "unknown".into(),
            reservation: None,
            relay: config.relay.clone(),
            relay_peer,
            listen_addrs: Vec::new(),
            addrs_tx,
            rdv: rendezvous::State::new(relay_peer, config.rendezvous_ttl),
        };
        tokio::spawn(state.run(cmd_rx, internal_rx));
        Ok(node)
    }

    /// This device's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.key.public().to_peer_id()
    }

    /// The store (shared with the loop).
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Events from the node's start (the first call; later calls get
    /// events from now on), so a listener misses no `listening` event.
    pub fn events_from_start(&self) -> broadcast::Receiver<Event> {
        let first = self
            .inner
            .first_events
            .lock()
            .ok()
            .and_then(|mut f| f.take());
        first.unwrap_or_else(|| self.subscribe())
    }

    async fn command(&self, cmd: Command) -> Result<(), NodeError> {
        self.inner
            .cmd
            .send(cmd)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Asks the loop to deliver whatever the outbox holds now.
    pub async fn flush(&self) -> Result<(), NodeError> {
        self.command(Command::Flush).await
    }

    /// Adds a contact and dials it.
    pub async fn add_contact(&self, contact: Contact) -> Result<(), NodeError> {
        let c = contact.clone();
        self.inner.store.call(move |s| s.add_contact(&c)).await?;
        if let Ok(peer) = contact.peer_id.parse() {
            let addrs = contact
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            let relay = contact.relay.as_deref().and_then(|r| r.parse().ok());
            self.command(Command::Dial(peer, addrs, relay)).await?;
        }
        Ok(())
    }

    /// Dials a peer at the given addresses.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NodeError> {
        self.command(Command::Dial(peer, addrs, None)).await
    }

    /// Stores a text for a contact (name or PeerId), queues it and starts
    /// delivering it. Returns the envelope.
    pub async fn send_text(&self, contact: &str, text: &str) -> Result<Envelope, NodeError> {
        let body = serde_json::json!({ "text": text }).to_string();
        self.send_to_contact(contact, kind::TEXT, body).await
    }

    /// Stores any kind for a contact's direct conversation and queues it.
    pub async fn send_to_contact(
        &self,
        contact: &str,
        kind: &str,
        body: String,
    ) -> Result<Envelope, NodeError> {
        let key = self.inner.key.clone();
        let who = contact.to_owned();
        let kind = kind.to_owned();
        let env = self
            .inner
            .store
            .call(move |s| {
                let c = s.find_contact(&who)?;
                let conv = direct_conversation_id(s.me(), &c.peer_id);
                s.compose(&key, &conv, &kind, &body, None)
            })
            .await?;
        self.flush().await?;
        Ok(env)
    }

    /// Stores a message in a conversation (direct or group) and queues it
    /// to every other member.
    pub async fn send_to_conversation(
        &self,
        conversation_id: &str,
        kind: &str,
        body: String,
    ) -> Result<Envelope, NodeError> {
        self.send_to_conversation_with_id(conversation_id, kind, body, None)
            .await
    }

    /// [`Node::send_to_conversation`] with the caller's idempotency key (a
    /// UUID; a new one when `None`): a second send with the same key
    /// returns the stored envelope and stores nothing.
    pub async fn send_to_conversation_with_id(
        &self,
        conversation_id: &str,
        kind: &str,
        body: String,
        client_msg_id: Option<String>,
    ) -> Result<Envelope, NodeError> {
        let key = self.inner.key.clone();
        let conv = conversation_id.to_owned();
        let kind = kind.to_owned();
        let env = self
            .inner
            .store
            .call(move |s| s.compose(&key, &conv, &kind, &body, client_msg_id.as_deref()))
            .await?;
        self.flush().await?;
        Ok(env)
    }

    /// Asks a connected contact for a fresh MLS KeyPackage over
    /// `/confab/kp/1`.
    pub(crate) async fn key_package_of(&self, peer: &str) -> Result<(String, String), NodeError> {
        let id: PeerId = peer
            .parse()
            .map_err(|_| NodeError::Store(StoreError::Invalid(format!("bad PeerId {peer}"))))?;
        let answer = self.ask_kp(id, b"{}".to_vec()).await;
        let kp = answer.and_then(|v| {
            v["key_package"].as_str().map(str::to_owned).ok_or_else(|| {
                v["error"]
                    .as_str()
                    .unwrap_or("the peer answered no key package")
                    .to_owned()
            })
        });
        let kp = kp.map_err(|e| {
            NodeError::Store(StoreError::Invalid(format!(
                "waiting for keys: cannot get {peer}'s key package ({e}); try again when it is online"
            )))
        })?;
        Ok((peer.to_owned(), kp))
    }

    /// One `/confab/kp/1` request to a connected peer; its JSON answer.
    /// A peer gives one answer per asker every [`KP_EVERY`]; when it says
    /// how long to wait (`retry_after_ms`), the request goes again once
    /// after that wait, so callers never retry for this reason themselves.
    async fn ask_kp(&self, peer: PeerId, body: Vec<u8>) -> Result<serde_json::Value, String> {
        let answer = self.ask_kp_once(peer, body.clone()).await?;
        match answer["retry_after_ms"].as_u64() {
            Some(ms) if ms <= KP_EVERY.as_millis() as u64 => {
                tokio::time::sleep(Duration::from_millis(ms + 50)).await;
                self.ask_kp_once(peer, body).await
            }
            _ => Ok(answer),
        }
    }

    async fn ask_kp_once(&self, peer: PeerId, body: Vec<u8>) -> Result<serde_json::Value, String> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::KeyPackage(peer, body, tx))
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(KP_ASK_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| "the node stopped".to_owned())?,
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// The encrypted direct conversation with a contact (name or PeerId):
    /// made, with its MLS group, on first use; the contact must be
    /// connected then (its KeyPackage comes from it). Returns its id.
    pub async fn encrypted_conversation(&self, contact: &str) -> Result<String, NodeError> {
        let who = contact.to_owned();
        let (conv, peer, ready) = self
            .inner
            .store
            .call(move |s| {
                let peer = s.find_contact(&who)?.peer_id;
                let conv = s.encrypted_direct(&peer)?;
                let ready = s.has_mls_group(&conv);
                Ok((conv, peer, ready))
            })
            .await?;
        if ready {
            return Ok(conv);
        }
        if self.peer_id().to_base58() > peer {
            // The lower PeerId makes the group of a direct conversation
            // (two makers would fork it): this side hands it a KeyPackage.
            return self.ask_to_start(&peer, conv).await;
        }
        let kp = self.key_package_of(&peer).await?;
        let key = self.inner.key.clone();
        let id = conv.clone();
        self.inner
            .store
            .call(move |s| s.start_encrypted(&key, &id, &[kp]))
            .await?;
        self.flush().await?;
        Ok(conv)
    }

    /// The side with the higher PeerId of an encrypted direct conversation:
    /// its own KeyPackage goes to the contact (`{"start": kp}` on
    /// `/confab/kp/1`), which makes the group and sends the Welcome; this
    /// waits a few seconds for the Welcome to be opened.
    async fn ask_to_start(&self, peer: &str, conv: String) -> Result<String, NodeError> {
        let waiting = |why: String| {
            NodeError::Store(StoreError::Invalid(format!(
                "waiting for keys: {peer} makes this conversation's group ({why}); try again when it is online"
            )))
        };
        let id: PeerId = peer
            .parse()
            .map_err(|_| NodeError::Store(StoreError::Invalid(format!("bad PeerId {peer}"))))?;
        let kp = self.inner.store.call(|s| s.answer_key_package()).await?;
        let body = serde_json::json!({ "start": kp }).to_string().into_bytes();
        let answer = self.ask_kp(id, body).await.map_err(waiting)?;
        if answer.get("started").is_none() {
            let why = answer["error"].as_str().unwrap_or("refused").to_owned();
            return Err(waiting(why));
        }
        let started = Instant::now();
        while started.elapsed() < START_WAIT {
            let c = conv.clone();
            if self
                .inner
                .store
                .call(move |s| Ok(s.has_mls_group(&c)))
                .await?
            {
                return Ok(conv);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(waiting("its Welcome has not arrived yet".into()))
    }

    /// Creates an encrypted group with contacts (names or PeerIds), each
    /// of them connected (their KeyPackages come from them); returns its id.
    pub async fn create_encrypted_group(
        &self,
        title: &str,
        members: Vec<String>,
    ) -> Result<String, NodeError> {
        let names = members.clone();
        let peers = self
            .inner
            .store
            .call(move |s| {
                names
                    .iter()
                    .map(|m| s.find_contact(m).map(|c| c.peer_id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut kps = Vec::new();
        for p in &peers {
            kps.push(self.key_package_of(p).await?);
        }
        let key = self.inner.key.clone();
        let title = title.to_owned();
        let id = self
            .inner
            .store
            .call(move |s| {
                let env = s.create_group(&key, &title, &members)?;
                s.start_encrypted(&key, &env.conversation_id, &kps)?;
                Ok(env.conversation_id)
            })
            .await?;
        self.flush().await?;
        Ok(id)
    }

    /// Sends a message (`kind`, `body` as JSON text) in an encrypted
    /// conversation: encrypted with its MLS group, queued to every member.
    pub async fn send_encrypted(
        &self,
        conversation_id: &str,
        kind: &str,
        body: String,
    ) -> Result<Envelope, NodeError> {
        let key = self.inner.key.clone();
        let conv = conversation_id.to_owned();
        let kind = kind.to_owned();
        let env = self
            .inner
            .store
            .call(move |s| s.send_encrypted(&key, &conv, &kind, &body))
            .await?;
        self.flush().await?;
        Ok(env)
    }

    /// Creates a group with contacts (names or PeerIds); returns its id.
    pub async fn create_group(
        &self,
        title: &str,
        members: Vec<String>,
    ) -> Result<String, NodeError> {
        let key = self.inner.key.clone();
        let title = title.to_owned();
        let env = self
            .inner
            .store
            .call(move |s| s.create_group(&key, &title, &members))
            .await?;
        self.flush().await?;
        Ok(env.conversation_id)
    }

    /// Adds and removes members of a group this device administers (names
    /// or PeerIds of contacts) with a signed `group_change`, queued to
    /// every member old and new.
    pub async fn change_group(
        &self,
        conversation_id: &str,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Envelope, NodeError> {
        let key = self.inner.key.clone();
        let conv = conversation_id.to_owned();
        // Encrypted: the added members' KeyPackages first (they must be
        // connected), then the change and its MLS commit.
        let (names, id) = (add.clone(), conv.clone());
        let (encrypted, added) = self
            .inner
            .store
            .call(move |s| {
                let added = names
                    .iter()
                    .map(|m| s.find_contact(m).map(|c| c.peer_id))
                    .collect::<Result<Vec<_>, _>>();
                Ok((s.is_encrypted(&id)?, added))
            })
            .await?;
        let mut kps = Vec::new();
        if encrypted {
            for p in &added? {
                kps.push(self.key_package_of(p).await?);
            }
        }
        let env = self
            .inner
            .store
            .call(move |s| {
                let removed = remove
                    .iter()
                    .map(|m| s.find_contact(m).map(|c| c.peer_id))
                    .collect::<Result<Vec<_>, _>>();
                let env = s.change_group(&key, &conv, &add, &remove)?;
                if encrypted {
                    s.commit_change(&key, &conv, &kps, &removed?)?;
                }
                Ok(env)
            })
            .await?;
        self.flush().await?;
        Ok(env)
    }

    /// Tells the conversation's connected members that this device is
    /// typing (a signed `typing` envelope, not stored or queued). Returns
    /// how many members it went to.
    pub async fn typing(&self, conversation_id: &str) -> Result<usize, NodeError> {
        let key = self.inner.key.clone();
        let conv = conversation_id.to_owned();
        let (env, others) = self
            .inner
            .store
            .call(move |s| s.compose_typing(&key, &conv))
            .await?;
        let peers = others.iter().filter_map(|p| p.parse().ok()).collect();
        let (tx, rx) = oneshot::channel();
        self.command(Command::Ephemeral(peers, env.encode(), tx))
            .await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Marks what others sent in a conversation as read with a `receipt`
    /// envelope delivered to every member; `None` if nothing was unread.
    pub async fn mark_read(&self, conversation_id: &str) -> Result<Option<Envelope>, NodeError> {
        let key = self.inner.key.clone();
        let conv = conversation_id.to_owned();
        let env = self
            .inner
            .store
            .call(move |s| s.mark_read(&key, &conv))
            .await?;
        if env.is_some() {
            self.flush().await?;
        }
        Ok(env)
    }

    /// Offers a file to a contact: hashes it, records it and sends a `file`
    /// envelope; the contact pulls the bytes over `/confab/file/1`.
    pub async fn send_file(&self, contact: &str, path: &Path) -> Result<Envelope, NodeError> {
        let body = self.offer_file(path).await?;
        self.send_to_contact(contact, kind::FILE, body).await
    }

    /// Offers a file in a conversation (direct or group): every member
    /// pulls it from this device (or from any member that has it whole).
    pub async fn send_file_to_conversation(
        &self,
        conversation_id: &str,
        path: &Path,
    ) -> Result<Envelope, NodeError> {
        let body = self.offer_file(path).await?;
        self.send_to_conversation(conversation_id, kind::FILE, body)
            .await
    }

    /// Offers a file in an encrypted conversation (direct or group): its
    /// name, size and SHA-256 travel inside the MLS message; the bytes are
    /// pulled over `/confab/file/1` as in a plain one (Noise between the
    /// two peers, relayed or not).
    pub async fn send_encrypted_file(
        &self,
        conversation_id: &str,
        path: &Path,
    ) -> Result<Envelope, NodeError> {
        let body = self.offer_file(path).await?;
        self.send_encrypted(conversation_id, kind::FILE, body).await
    }

    /// Offers a file to a contact in the encrypted direct conversation,
    /// waiting for its keys as [`Node::send_encrypted_to_contact`] does.
    pub async fn send_encrypted_file_to_contact(
        &self,
        contact: &str,
        path: &Path,
        wait: Duration,
    ) -> Result<EncryptedSend, NodeError> {
        let body = self.offer_file(path).await?;
        self.send_encrypted_to_contact(contact, kind::FILE, body, wait)
            .await
    }

    /// Hashes a file and records it as served from here; answers the body
    /// of its `file` envelope.
    async fn offer_file(&self, path: &Path) -> Result<String, NodeError> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| NodeError::File(path.display().to_string(), e))?;
        let shown = path.display().to_string();
        let p = path.clone();
        let (sha256, size) = tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .map_err(|e| NodeError::File(shown.clone(), e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let record = FileRecord {
            sha256: sha256.clone(),
            path: shown,
            size,
            name: name.clone(),
            mime: "application/octet-stream".into(),
            complete: true,
            source: String::new(),
        };
        self.inner.store.call(move |s| s.put_file(&record)).await?;
        Ok(serde_json::json!({
            "media_id": sha256, "name": name, "size": size, "mime": "application/octet-stream"
        })
        .to_string())
    }

    /// Waits until `to` acks `client_msg_id` or the time is up.
    pub async fn wait_delivered(
        &self,
        mut events: broadcast::Receiver<Event>,
        to: &str,
        client_msg_id: &str,
        wait: Duration,
    ) -> Result<bool, NodeError> {
        let (to2, id2) = (to.to_owned(), client_msg_id.to_owned());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let pending = self
                .inner
                .store
                .call({
                    let (to, id) = (to2.clone(), id2.clone());
                    move |s| s.is_pending(&to, &id)
                })
                .await?;
            if !pending {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Ok(false),
                Ok(Ok(Event::Delivered {
                    to: t,
                    client_msg_id: c,
                    ..
                })) if t == to2 && c == id2 => return Ok(true),
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(NodeError::Stopped),
            }
        }
    }

    /// Status and counters.
    pub async fn status(&self) -> Result<Status, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Status(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// LAN peers found by mDNS so far.
    pub async fn nearby(&self) -> Result<Vec<NearbyPeer>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Nearby(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Addresses the node listens on now (with `/p2p/<id>`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Addrs(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Waits (up to `wait`) until the node listens on at least one
    /// address, and returns its addresses.
    pub async fn listening(&self, wait: Duration) -> Result<Vec<Multiaddr>, NodeError> {
        let mut rx = self.inner.addrs.clone();
        let got = tokio::time::timeout(wait, rx.wait_for(|a| !a.is_empty()))
            .await
            .map_err(|_| NodeError::Transport("no listen address came up".into()))?
            .map_err(|_| NodeError::Stopped)?
            .clone();
        Ok(got)
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Tells this node's subscribers that it sent `envelope` for another
    /// program ([`Event::Sent`]).
    pub fn announce_sent(&self, envelope: &Envelope) {
        let _ = self.inner.events.send(Event::Sent {
            envelope: envelope.clone(),
        });
    }

    /// Stops the event loop (connections close).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.command(Command::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, rx).await;
        }
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn build_swarm(key: &Keypair, name: &str, mdns_on: bool) -> Result<Swarm<Behaviour>, NodeError> {
    let err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let codec = |max_request: u64, max_response: u64| BytesCodec {
        max_request,
        max_response,
    };
    let rr_config =
        request_response::Config::default().with_request_timeout(Duration::from_secs(20));
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| err(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| err(&e))?
        .with_behaviour(|key, relay_client| {
            let me = key.public().to_peer_id();
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config {
                        query_interval: Duration::from_secs(5),
                        ..Default::default()
                    },
                    me,
                )?)
            } else {
                None
            };
            let proto = |p| [(p, ProtocolSupport::Full)];
            Ok(Behaviour {
                relay_client,
                ping: ping::Behaviour::new(ping::Config::new()),
                identify: identify::Behaviour::new(
                    identify::Config::new("/confab/1.0.0".into(), key.public())
                        .with_agent_version(agent_version(name)),
                ),
                mdns: Toggle::from(mdns),
                dcutr: dcutr::Behaviour::new(me),
                autonat: autonat::Behaviour::new(me, autonat::Config::default()),
                msg: request_response::Behaviour::with_codec(
                    codec(DEFAULT_MAX_ENVELOPE_BYTES as u64 * 4, 64 * 1024),
                    proto(MSG_PROTOCOL),
                    rr_config.clone(),
                ),
                sync: request_response::Behaviour::with_codec(
                    codec(256 * 1024, 32 * 1024 * 1024),
                    proto(SYNC_PROTOCOL),
                    rr_config.clone(),
                ),
                file: request_response::Behaviour::with_codec(
                    codec(4096, 2 * FILE_CHUNK + 4096),
                    proto(FILE_PROTOCOL),
                    rr_config.clone(),
                ),
                mailbox: request_response::Behaviour::with_codec(
                    codec(0, 32 * 1024 * 1024),
                    [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                    rr_config.clone(),
                ),
                kp: request_response::Behaviour::with_codec(
                    codec(1024, 64 * 1024),
                    proto(crate::wire::KP_PROTOCOL),
                    rr_config,
                ),
                rendezvous: libp2p::rendezvous::client::Behaviour::new(key.clone()),
                candidates: Default::default(),
            })
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

struct Loop {
    swarm: Swarm<Behaviour>,
    relay_listener: Option<libp2p::core::transport::ListenerId>,
    last_reserve: Option<Instant>,
    key: Keypair,
    /// The last mailbox fetch said more were waiting.
    mailbox_more: bool,
    store: SharedStore,
    me: PeerId,
    name: String,
    data_dir: PathBuf,
    max_envelope_bytes: usize,
    events: broadcast::Sender<Event>,
    internal_tx: mpsc::Sender<Internal>,
    /// Open connections per peer, and whether each is relayed.
    connections: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    /// Peers with both a direct and a relayed connection, since when.
    upgraded: HashMap<PeerId, Instant>,
    /// The remote address of each open connection.
    remote_addrs: HashMap<ConnectionId, Multiaddr>,
    /// Keyed by protocol too: each request-response behaviour numbers its own requests.
    inflight: HashMap<(Proto, OutboundRequestId), (PeerId, Pendingkey, bool)>,
    inflight_keys: HashSet<(PeerId, String)>,
    /// `/confab/kp/1` requests and who waits for their answer.
    kp_waiting: HashMap<OutboundRequestId, oneshot::Sender<Result<serde_json::Value, String>>>,
    /// When each peer was last given a KeyPackage ([`KP_EVERY`]).
    kp_answered: HashMap<PeerId, Instant>,
    syncing: HashSet<(PeerId, String)>,
    downloading: HashSet<String>,
    last_dial: HashMap<PeerId, Instant>,
    nearby: HashMap<PeerId, Vec<Multiaddr>>,
    names: HashMap<PeerId, String>,
    counters: Counters,
    nat: String,
    reservation: Option<String>,
    relay: Option<Multiaddr>,
    relay_peer: Option<PeerId>,
    listen_addrs: Vec<Multiaddr>,
    addrs_tx: tokio::sync::watch::Sender<Vec<Multiaddr>>,
    /// Registration at our relay's rendezvous point, lookups of contacts.
    rdv: rendezvous::State,
}

/// How long an envelope waits for its recipient before it is left in the
/// relay's mailbox.
const MAILBOX_AFTER: Duration = Duration::from_secs(3);

/// How long a relayed connection stays open after a direct one to the same
/// peer came up (in-flight requests finish; DCUtR's last messages pass).
const RELAYED_GRACE: Duration = Duration::from_secs(2);

/// How long after a failed file chunk request it is asked again (while
/// the peer is connected).
const DOWNLOAD_RETRY: Duration = Duration::from_secs(1);

/// How long a `/confab/kp/1` request may take (a request caught on a
/// connection going down is asked again instead of waiting for the
/// general 20 s request timeout).
const KP_ASK_TIMEOUT: Duration = Duration::from_secs(4);

/// How long the higher side of a direct conversation waits for the
/// Welcome after asking the contact to make the group.
const START_WAIT: Duration = Duration::from_secs(10);

/// A peer gets a fresh KeyPackage at most this often: each one keeps a
/// private key in this device's MLS state until a Welcome uses it, so an
/// unbounded stream of requests would grow that state without bound.
const KP_EVERY: Duration = Duration::from_secs(5);

/// How long a shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How long a shutdown runs the swarm for its rendezvous unregistration to
/// be written (no answer comes to one).
const UNREGISTER_GRACE: Duration = Duration::from_millis(250);

/// How long to wait before dialing an unreachable contact again.
const REDIAL_AFTER: Duration = Duration::from_secs(3);

impl Loop {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut internal_rx: mpsc::Receiver<Internal>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The relay client dials the relay itself for the reservation (a
        // dial of our own racing it made the reservation fail).
        self.reserve();
        // Coming online: reach every contact once, so conversations catch
        // up (sync runs on each new connection) even with nothing to send.
        self.spawn(|store, tx| async move {
            if let Ok(all) = store.call(|s| s.contacts()).await {
                let _ = tx.send(Internal::DueRecipients(all)).await;
            }
        });
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = cmd_rx.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(done)) => {
                        self.close_all().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
                Some(msg) = internal_rx.recv() => self.on_internal(msg),
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Closes every connection and drives the swarm (up to
    /// [`SHUTDOWN_GRACE`]) so the other ends hear of it: the relay then
    /// drops this peer's reservation and circuits at once instead of
    /// routing a contact's circuit into a dead connection until it times
    /// out.
    async fn close_all(&mut self) {
        if self.rendezvous_unregister() {
            // No answer comes to an unregistration: give it a moment to
            // be written before the connection closes.
            let _ = tokio::time::timeout(UNREGISTER_GRACE, async {
                loop {
                    let _ = self.swarm.select_next_some().await;
                }
            })
            .await;
        }
        let ids: Vec<ConnectionId> = self
            .connections
            .values()
            .flat_map(|c| c.keys().copied())
            .collect();
        for id in ids {
            self.swarm.close_connection(id);
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.swarm.connected_peers().next().is_some() {
                let _ = self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    /// Runs store work off the loop; its result comes back as internal messages.
    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(SharedStore, mpsc::Sender<Internal>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(f(self.store.clone(), self.internal_tx.clone()));
    }

    /// Listens through the relay (a reservation), unless it already does or
    /// tried in the last 10 s.
    fn reserve(&mut self) {
        let Some(relay) = self.relay.clone() else {
            return;
        };
        if self.relay_listener.is_some()
            || self
                .last_reserve
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last_reserve = Some(Instant::now());
        match self
            .swarm
            .listen_on(relay.clone().with(Protocol::P2pCircuit))
        {
            Ok(id) => self.relay_listener = Some(id),
            Err(e) => tracing::warn!(%relay, "reservation: {e}"),
        }
    }

    fn is_connected(&self, peer: &PeerId) -> bool {
        self.connections.get(peer).is_some_and(|c| !c.is_empty())
    }

    fn path_of(&self, peer: &PeerId) -> Option<bool> {
        let conns = self.connections.get(peer)?;
        if conns.is_empty() {
            return None;
        }
        Some(conns.values().all(|relayed| *relayed))
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Flush => self.on_tick(),
            Command::Ephemeral(peers, bytes, reply) => {
                let mut sent = 0;
                for peer in peers {
                    if !self.is_connected(&peer) {
                        continue;
                    }
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .msg
                        .send_request(&peer, bytes.clone());
                    self.inflight
                        .insert((Proto::Msg, id), (peer, Pendingkey::Ephemeral, false));
                    sent += 1;
                }
                let _ = reply.send(sent);
            }
            Command::Dial(peer, addrs, relay) => {
                if let Some(relay) = relay {
                    self.rdv.contact_relay(peer, relay);
                }
                self.dial(peer, addrs, true)
            }
            Command::Status(reply) => {
                let snapshot = self.status_base();
                let paths: HashMap<String, String> = self
                    .connections
                    .keys()
                    .filter_map(|p| Some((p.to_base58(), path_name(self.path_of(p)?))))
                    .collect();
                let mut found: HashMap<String, Vec<String>> = HashMap::new();
                for peer in self.rdv.found_peers() {
                    found.insert(
                        peer.to_base58(),
                        self.rdv
                            .found(&peer)
                            .iter()
                            .map(|a| a.to_string())
                            .collect(),
                    );
                }
                let mut remotes: HashMap<String, Vec<String>> = HashMap::new();
                for (peer, conns) in &self.connections {
                    for id in conns.keys() {
                        if let Some(a) = self.remote_addrs.get(id) {
                            remotes
                                .entry(peer.to_base58())
                                .or_default()
                                .push(a.to_string());
                        }
                    }
                }
                self.spawn(move |store, _| async move {
                    let contacts = store
                        .call(move |s| {
                            let mut out = Vec::new();
                            for c in s.contacts()? {
                                let pending = s.pending_ids(&c.peer_id)?.len() as u64;
                                out.push(ContactStatus {
                                    path: paths
                                        .get(&c.peer_id)
                                        .cloned()
                                        .unwrap_or_else(|| "offline".into()),
                                    connections: remotes.remove(&c.peer_id).unwrap_or_default(),
                                    discovered: found.remove(&c.peer_id).unwrap_or_default(),
                                    peer_id: c.peer_id,
                                    name: c.name,
                                    pending,
                                });
                            }
                            Ok(out)
                        })
                        .await
                        .unwrap_or_default();
                    let _ = reply.send(Status {
                        contacts,
                        ..snapshot
                    });
                });
            }
            Command::Nearby(reply) => {
                let list: Vec<(PeerId, Vec<Multiaddr>)> =
                    self.nearby.iter().map(|(p, a)| (*p, a.clone())).collect();
                let names = self.names.clone();
                self.spawn(move |store, _| async move {
                    let contacts: HashSet<String> = store
                        .call(|s| Ok(s.contacts()?.into_iter().map(|c| c.peer_id).collect()))
                        .await
                        .unwrap_or_default();
                    let out = list
                        .into_iter()
                        .map(|(p, addrs)| NearbyPeer {
                            peer_id: p.to_base58(),
                            name: names.get(&p).cloned().unwrap_or_default(),
                            addrs: addrs.iter().map(|a| a.to_string()).collect(),
                            contact: contacts.contains(&p.to_base58()),
                        })
                        .collect();
                    let _ = reply.send(out);
                });
            }
            Command::Addrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::KeyPackage(peer, body, reply) => {
                if !self.is_connected(&peer) {
                    let _ = reply.send(Err(format!("{peer} is not connected")));
                    return;
                }
                let id = self.swarm.behaviour_mut().kp.send_request(&peer, body);
                self.kp_waiting.insert(id, reply);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status_base(&self) -> Status {
        Status {
            peer_id: self.me.to_base58(),
            name: self.name.clone(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            nat: self.nat.clone(),
            reservation: self.reservation.clone(),
            rendezvous: self.rdv.status(&self.me),
            counters: self.counters.clone(),
            contacts: Vec::new(),
        }
    }

    fn dial(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>, now: bool) {
        if peer == self.me || self.is_connected(&peer) {
            return;
        }
        let redial = self.last_dial.contains_key(&peer);
        if !now
            && self
                .last_dial
                .get(&peer)
                .is_some_and(|t| t.elapsed() < REDIAL_AFTER)
        {
            return;
        }
        self.last_dial.insert(peer, Instant::now());
        if let Some(found) = self.nearby.get(&peer) {
            addrs.extend(found.iter().cloned());
        }
        // Not reachable at its known addresses (none, or tried before):
        // ask the rendezvous points where it registered.
        if addrs.is_empty() || redial {
            self.lookup(peer);
        }
        // Circuit dials only once our own reservation stands: dialing through
        // the relay earlier kept the reservation from being made.
        if let (Some(relay), Some(_)) = (&self.relay, &self.reservation) {
            addrs.push(
                relay
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(peer)),
            );
        }
        // A dial of rendezvous-found addresses may hang on a stale one:
        // dial beside it rather than wait.
        let condition = if self.rdv.found_dial_pending(&peer) {
            PeerCondition::Disconnected
        } else {
            PeerCondition::DisconnectedAndNotDialing
        };
        let opts = DialOpts::peer_id(peer)
            .condition(condition)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, "dial: {e}");
        }
    }

    /// Every second (and on demand): dial contacts with a waiting outbox,
    /// deliver to connected ones, fill gaps, resume downloads.
    fn on_tick(&mut self) {
        self.reserve();
        self.rendezvous_tick();
        self.close_upgraded_relays();
        self.spawn(|store, tx| async move {
            let due = store
                .call(|s| {
                    let recipients: HashSet<String> = s.outbox_recipients()?.into_iter().collect();
                    Ok(s.contacts()?
                        .into_iter()
                        .filter(|c| recipients.contains(&c.peer_id))
                        .collect::<Vec<_>>())
                })
                .await;
            if let Ok(due) = due {
                let _ = tx.send(Internal::DueRecipients(due)).await;
            }
        });
    }

    /// Closes the relayed connections of peers that have had a direct one
    /// for [`RELAYED_GRACE`]: requests then go direct (request-response
    /// spreads them over all connections), and the relay's circuit is
    /// freed. Whatever was in flight on them is retried by the outbox.
    fn close_upgraded_relays(&mut self) {
        let due: Vec<PeerId> = self
            .upgraded
            .iter()
            .filter(|(_, since)| since.elapsed() >= RELAYED_GRACE)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.upgraded.remove(&peer);
            let Some(conns) = self.connections.get(&peer) else {
                continue;
            };
            if !conns.values().any(|relayed| !*relayed) {
                continue;
            }
            let relayed: Vec<ConnectionId> = conns
                .iter()
                .filter(|(_, relayed)| **relayed)
                .map(|(id, _)| *id)
                .collect();
            for id in relayed {
                tracing::debug!(%peer, "closing the relayed connection: a direct one is up");
                self.swarm.close_connection(id);
            }
        }
    }

    fn flush_to(&mut self, peer: PeerId, force: bool) {
        let id = peer.to_base58();
        self.spawn(move |store, tx| async move {
            let Ok(due) = store.call(move |s| s.due(&id, force)).await else {
                return;
            };
            for p in due {
                let bytes = p.envelope.encode();
                let key = Pendingkey::Msg(p.envelope.client_msg_id.clone());
                if tx
                    .send(Internal::Send(Proto::Msg, peer, bytes, key))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// Catch-up with a peer for every conversation we share.
    fn sync_all_with(&mut self, peer: PeerId) {
        let id = peer.to_base58();
        self.spawn(move |store, tx| async move {
            let Ok(convs) = store.call(move |s| s.shared_conversations(&id)).await else {
                return;
            };
            for c in convs {
                let _ = tx.send(Internal::SyncWith(peer, c)).await;
            }
        });
    }

    fn resume_downloads(&mut self, peer: PeerId) {
        let id = peer.to_base58();
        self.spawn(move |store, tx| async move {
            let files = store
                .call(move |s| {
                    let mut out = Vec::new();
                    for sha in s.incomplete_files()? {
                        if s.file(&sha)?.is_some_and(|f| f.source == id) {
                            out.push(sha);
                        }
                    }
                    Ok(out)
                })
                .await
                .unwrap_or_default();
            for sha in files {
                let _ = tx.send(Internal::Download(peer, sha)).await;
            }
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Respond(proto, channel, bytes) => {
                let b = self.swarm.behaviour_mut();
                let rr = match proto {
                    Proto::Msg => &mut b.msg,
                    Proto::Sync => &mut b.sync,
                    Proto::File => &mut b.file,
                    Proto::Kp => &mut b.kp,
                    Proto::Mailbox => return,
                };
                let _ = rr.send_response(channel, bytes);
            }
            Internal::Send(proto, peer, bytes, key) => {
                if !self.is_connected(&peer) {
                    return;
                }
                if let Pendingkey::Msg(id) = &key {
                    if !self.inflight_keys.insert((peer, id.clone())) {
                        return;
                    }
                }
                if let Pendingkey::MailboxPut(r, id) = &key {
                    if !self.inflight_keys.insert((peer, format!("mbx {r} {id}"))) {
                        return;
                    }
                }
                let relayed = self.path_of(&peer).unwrap_or(false);
                let b = self.swarm.behaviour_mut();
                let request_id = match proto {
                    Proto::Msg => b.msg.send_request(&peer, bytes),
                    Proto::Sync => b.sync.send_request(&peer, bytes),
                    Proto::File => b.file.send_request(&peer, bytes),
                    Proto::Mailbox => b.mailbox.send_request(&peer, bytes),
                    Proto::Kp => return,
                };
                self.inflight
                    .insert((proto, request_id), (peer, key, relayed));
            }
            Internal::DueRecipients(contacts) => {
                for c in contacts {
                    let Ok(peer) = c.peer_id.parse::<PeerId>() else {
                        continue;
                    };
                    if let Some(relay) = c.relay.as_deref().and_then(|r| r.parse().ok()) {
                        self.rdv.contact_relay(peer, relay);
                    }
                    if self.is_connected(&peer) {
                        self.flush_to(peer, false);
                    } else {
                        let addrs = c.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                        self.dial(peer, addrs, false);
                        self.leave_in_mailbox(peer);
                    }
                }
            }
            Internal::MailboxDelivered(peer, id) => {
                self.counters.delivered_mailbox += 1;
                self.emit(Event::Delivered {
                    to: peer.to_base58(),
                    client_msg_id: id,
                    path: "mailbox".into(),
                });
            }
            Internal::Delivered(peer, id, relayed) => {
                if relayed {
                    self.counters.delivered_relayed += 1;
                } else {
                    self.counters.delivered_direct += 1;
                }
                self.emit(Event::Delivered {
                    to: peer.to_base58(),
                    client_msg_id: id,
                    path: path_name(relayed),
                });
            }
            Internal::Event(ev) => {
                match &ev {
                    Event::Message { .. } => self.counters.received += 1,
                    Event::Refused { .. } => self.counters.refused += 1,
                    _ => {}
                }
                self.emit(ev);
            }
            Internal::SyncWith(peer, conv) => {
                if !self.is_connected(&peer) || !self.syncing.insert((peer, conv.clone())) {
                    return;
                }
                let c = conv.clone();
                self.spawn(move |store, tx| async move {
                    let have = store.call(move |s| s.cursors(&c)).await.unwrap_or_default();
                    let req = SyncRequest {
                        conversation_id: conv.clone(),
                        have,
                    };
                    let bytes = serde_json::to_vec(&req).unwrap_or_default();
                    let _ = tx
                        .send(Internal::Send(
                            Proto::Sync,
                            peer,
                            bytes,
                            Pendingkey::Sync(conv),
                        ))
                        .await;
                });
            }
            Internal::SyncDone(peer, conv, more) => {
                self.syncing.remove(&(peer, conv.clone()));
                if more {
                    let _ = self.internal_tx.try_send(Internal::SyncWith(peer, conv));
                }
            }
            Internal::Download(peer, sha) => {
                if !self.is_connected(&peer) || !self.downloading.insert(sha.clone()) {
                    return;
                }
                self.request_chunk(peer, sha);
            }
            Internal::Flush => self.on_tick(),
            Internal::MailboxMore(more) => {
                self.mailbox_more = more;
            }
            Internal::DownloadStopped(sha) => {
                self.downloading.remove(&sha);
            }
        }
    }

    /// Envelopes for a contact that stayed unreachable for
    /// [`MAILBOX_AFTER`] go to the relay's mailbox; its ack empties the
    /// outbox entry (the recipient dedups if the envelope also arrives
    /// directly).
    fn leave_in_mailbox(&mut self, recipient: PeerId) {
        let Some(relay) = self.relay_peer else { return };
        if !self.is_connected(&relay) {
            return;
        }
        let id = recipient.to_base58();
        self.spawn(move |store, tx| async move {
            let Ok(stale) = store.call(move |s| s.stale(&id, MAILBOX_AFTER)).await else {
                return;
            };
            for p in stale {
                let key = Pendingkey::MailboxPut(recipient, p.envelope.client_msg_id.clone());
                let req = MailboxRequest::Put {
                    recipient: recipient.to_base58(),
                    envelope: p.envelope,
                };
                let bytes = serde_json::to_vec(&req).unwrap_or_default();
                if tx
                    .send(Internal::Send(Proto::Mailbox, relay, bytes, key))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    fn mailbox_challenge(&mut self) {
        let Some(relay) = self.relay_peer else { return };
        let bytes = serde_json::to_vec(&MailboxRequest::Challenge).unwrap_or_default();
        let _ = self.internal_tx.try_send(Internal::Send(
            Proto::Mailbox,
            relay,
            bytes,
            Pendingkey::MailboxChallenge,
        ));
    }

    fn on_mailbox(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        let request_response::Event::Message {
            peer,
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } = ev
        else {
            if let request_response::Event::OutboundFailure {
                peer, request_id, ..
            } = ev
            {
                if let Some((_, Pendingkey::MailboxPut(r, id), _)) =
                    self.inflight.remove(&(Proto::Mailbox, request_id))
                {
                    self.inflight_keys.remove(&(peer, format!("mbx {r} {id}")));
                }
            }
            return;
        };
        let Some((_, key, _)) = self.inflight.remove(&(Proto::Mailbox, request_id)) else {
            return;
        };
        let answer: MailboxResponse = serde_json::from_slice(&response).unwrap_or_default();
        match key {
            Pendingkey::MailboxPut(recipient, id) => {
                self.inflight_keys
                    .remove(&(peer, format!("mbx {recipient} {id}")));
                if !answer.ok {
                    tracing::warn!(error = ?answer.error, "mailbox refused an envelope");
                    return;
                }
                self.spawn(move |store, tx| async move {
                    let to = recipient.to_base58();
                    let cid = id.clone();
                    if store.call(move |s| s.delivered(&to, &cid)).await.is_ok() {
                        let _ = tx.send(Internal::MailboxDelivered(recipient, id)).await;
                    }
                });
            }
            Pendingkey::MailboxChallenge => {
                let Some(nonce) = answer.nonce else { return };
                // Prove this device's PeerId by signing the challenge.
                let sig = self
                    .key
                    .sign(&challenge_bytes(&peer.to_base58(), &nonce))
                    .unwrap_or_default();
                let req = MailboxRequest::Fetch {
                    nonce,
                    sig: base64::engine::general_purpose::STANDARD.encode(sig),
                };
                let bytes = serde_json::to_vec(&req).unwrap_or_default();
                let _ = self.internal_tx.try_send(Internal::Send(
                    Proto::Mailbox,
                    peer,
                    bytes,
                    Pendingkey::MailboxFetch,
                ));
            }
            Pendingkey::MailboxFetch => {
                self.emit(Event::MailboxFetched {
                    count: answer.envelopes.len(),
                });
                if answer.envelopes.is_empty() {
                    return;
                }
                let more = answer.has_more;
                self.spawn(move |store, tx| async move {
                    let mut stored = Vec::new();
                    for held in answer.envelopes {
                        match accept(&store, held.envelope, "mailbox").await {
                            Ok((new, messages, _)) => {
                                stored.push(held.id);
                                for m in messages.into_iter().filter(|_| new) {
                                    let _ = tx
                                        .send(Internal::Event(Event::Message { message: m }))
                                        .await;
                                }
                            }
                            Err(e) => tracing::warn!("mailbox envelope refused: {e}"),
                        }
                    }
                    let _ = tx.send(Internal::MailboxMore(more)).await;
                    // Only what is durably stored is acked (and then deleted there).
                    let req = MailboxRequest::Ack { ids: stored };
                    let bytes = serde_json::to_vec(&req).unwrap_or_default();
                    let _ = tx
                        .send(Internal::Send(
                            Proto::Mailbox,
                            peer,
                            bytes,
                            Pendingkey::MailboxAck,
                        ))
                        .await;
                });
            }
            // An ack after a full page: fetch the next one.
            Pendingkey::MailboxAck if answer.ok && std::mem::take(&mut self.mailbox_more) => {
                self.mailbox_challenge();
            }
            _ => {}
        }
    }

    fn request_chunk(&mut self, peer: PeerId, sha: String) {
        let part = part_path(&self.data_dir, &sha);
        let offset = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let req = FileRequest {
            sha256: sha.clone(),
            offset,
        };
        let bytes = serde_json::to_vec(&req).unwrap_or_default();
        let relayed = self.path_of(&peer).unwrap_or(false);
        let id = self.swarm.behaviour_mut().file.send_request(&peer, bytes);
        self.inflight
            .insert((Proto::File, id), (peer, Pendingkey::File(sha), relayed));
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with(Protocol::P2p(self.me));
                self.listen_addrs.push(full.clone());
                self.addrs_tx.send_replace(self.listen_addrs.clone());
                self.emit(Event::Listening {
                    addr: full.to_string(),
                });
            }
            SwarmEvent::ListenerClosed { listener_id, .. }
                if Some(listener_id) == self.relay_listener =>
            {
                self.relay_listener = None;
                self.reservation = None;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.me));
                self.listen_addrs.retain(|a| *a != full);
                self.addrs_tx.send_replace(self.listen_addrs.clone());
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed() || is_relayed(endpoint.get_remote_address());
                let first = !self.is_connected(&peer_id);
                let remote = match &endpoint {
                    // An inbound circuit's remote address is a bare
                    // `/p2p/<peer>`: name the path it came by (our
                    // `…/p2p/<relay>/p2p-circuit` listen address), so a
                    // relayed connection always shows `/p2p-circuit`.
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                        if relayed && !is_relayed(endpoint.get_remote_address()) =>
                    {
                        local_addr.clone().with(Protocol::P2p(peer_id))
                    }
                    _ => endpoint.get_remote_address().clone(),
                };
                self.remote_addrs.insert(connection_id, remote.clone());
                let conns = self.connections.entry(peer_id).or_default();
                conns.insert(connection_id, relayed);
                if conns.values().any(|r| *r) && conns.values().any(|r| !*r) {
                    // Upgraded (hole punching, or a direct dial that got
                    // through): the relayed connections close shortly.
                    self.upgraded.entry(peer_id).or_insert_with(Instant::now);
                }
                if Some(peer_id) == self.relay_peer {
                    if first {
                        self.mailbox_challenge();
                        self.rendezvous_connected(peer_id);
                        self.rendezvous_tick();
                    }
                    return;
                }
                if self.rdv.is_point(&peer_id) {
                    // Another relay, dialled to look a contact up there.
                    self.rendezvous_connected(peer_id);
                    return;
                }
                if first || !relayed {
                    self.emit(Event::Connected {
                        peer: peer_id.to_base58(),
                        path: path_name(relayed),
                        addr: remote.to_string(),
                    });
                }
                self.flush_to(peer_id, true);
                self.sync_all_with(peer_id);
                self.resume_downloads(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.remove(&connection_id);
                }
                self.remote_addrs.remove(&connection_id);
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.upgraded.remove(&peer_id);
                    self.inflight_keys.retain(|(p, _)| *p != peer_id);
                    self.syncing.retain(|(p, _)| *p != peer_id);
                    if Some(peer_id) == self.relay_peer {
                        self.rendezvous_relay_lost();
                    } else if !self.rdv.is_point(&peer_id) {
                        self.emit(Event::Disconnected {
                            peer: peer_id.to_base58(),
                        });
                    }
                }
            }
            SwarmEvent::ExternalAddrConfirmed { .. } => self.rendezvous_tick(),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } if Some(peer) != self.relay_peer && !self.rdv.is_point(&peer) => {
                // Its known addresses failed: look it up.
                self.lookup(peer);
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let mut found: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
                for (peer, addr) in list {
                    if peer != self.me {
                        found.entry(peer).or_default().push(addr);
                    }
                }
                for (peer, addrs) in found {
                    let known = self.nearby.entry(peer).or_default();
                    let fresh = addrs.iter().any(|a| !known.contains(a));
                    for a in &addrs {
                        if !known.contains(a) {
                            known.push(a.clone());
                        }
                    }
                    if fresh {
                        self.emit(Event::Discovered {
                            peer: peer.to_base58(),
                            addrs: addrs.iter().map(|a| a.to_string()).collect(),
                        });
                    }
                    // Connect to learn its name (identify) and to deliver.
                    self.dial(peer, addrs, false);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(list)) => {
                for (peer, addr) in list {
                    if let Some(known) = self.nearby.get_mut(&peer) {
                        known.retain(|a| *a != addr);
                        if known.is_empty() {
                            self.nearby.remove(&peer);
                        }
                    }
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Some(name) = name_from_agent(&info.agent_version) {
                    self.names.insert(peer_id, name);
                }
                if Some(peer_id) == self.relay_peer {
                    // The relay sees our public address: a hole-punch
                    // candidate (see candidates.rs for why not confirmed here).
                    self.swarm
                        .behaviour_mut()
                        .candidates
                        .offer(info.observed_addr);
                }
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                self.reservation = Some(relay_peer_id.to_base58());
                self.emit(Event::Reservation {
                    relay: relay_peer_id.to_base58(),
                });
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                self.counters.holepunch_attempts += 1;
                let ok = result.is_ok();
                if ok {
                    self.counters.holepunch_successes += 1;
                }
                self.emit(Event::HolePunch {
                    peer: remote_peer_id.to_base58(),
                    ok,
                    error: result.err().map(|e| e.to_string()),
                });
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                self.nat = match new {
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                }
                .into();
                self.emit(Event::Nat {
                    status: self.nat.clone(),
                });
            }
            BehaviourEvent::Msg(ev) => self.on_msg(ev),
            BehaviourEvent::Sync(ev) => self.on_sync(ev),
            BehaviourEvent::File(ev) => self.on_file(ev),
            BehaviourEvent::Mailbox(ev) => self.on_mailbox(ev),
            BehaviourEvent::Kp(ev) => self.on_kp(ev),
            BehaviourEvent::Rendezvous(ev) => self.on_rendezvous(ev),
            _ => {}
        }
    }

    fn on_msg(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => {
                let relayed = self
                    .connections
                    .get(&peer)
                    .and_then(|c| c.get(&connection_id))
                    .copied()
                    .unwrap_or(false);
                let max = self.max_envelope_bytes;
                self.spawn(move |store, tx| async move {
                    let via = path_name(relayed);
                    let result = match Envelope::decode(&request, max) {
                        Err(r) => Err(StoreError::Refused(r)),
                        Ok(env) if env.sender != peer.to_base58() => {
                            Err(StoreError::Refused(Refusal::WrongOrigin(env.sender)))
                        }
                        Ok(env) if env.kind == kind::TYPING => {
                            let conv = env.conversation_id.clone();
                            match store.call(move |s| s.check_ephemeral(&env)).await {
                                Ok(()) => {
                                    let _ = tx
                                        .send(Internal::Event(Event::Typing {
                                            peer: peer.to_base58(),
                                            conversation_id: conv,
                                        }))
                                        .await;
                                    Ok((false, Vec::new(), None))
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Ok(env) => accept(&store, env, &via).await,
                    };
                    let ack = match result {
                        Ok((new, messages, missing)) => {
                            if new {
                                for m in messages {
                                    if let Some(sha) = media_id(&m) {
                                        let _ = tx.send(Internal::Download(peer, sha)).await;
                                    }
                                    let _ = tx
                                        .send(Internal::Event(Event::Message { message: m }))
                                        .await;
                                }
                            }
                            if let Some(conv) = missing {
                                let _ = tx.send(Internal::SyncWith(peer, conv)).await;
                            }
                            MsgAck {
                                ok: true,
                                new,
                                error: None,
                            }
                        }
                        Err(e) => {
                            let error = wire_error(&e);
                            let _ = tx
                                .send(Internal::Event(Event::Refused {
                                    from: peer.to_base58(),
                                    code: error.code.clone(),
                                    message: error.message.clone(),
                                }))
                                .await;
                            MsgAck {
                                ok: false,
                                new: false,
                                error: Some(error),
                            }
                        }
                    };
                    let bytes = serde_json::to_vec(&ack).unwrap_or_default();
                    let _ = tx.send(Internal::Respond(Proto::Msg, channel, bytes)).await;
                });
            }
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
            } => {
                let Some((_, Pendingkey::Msg(id), relayed)) =
                    self.inflight.remove(&(Proto::Msg, request_id))
                else {
                    return;
                };
                // The path the ack came back on.
                let relayed = self
                    .connections
                    .get(&peer)
                    .and_then(|c| c.get(&connection_id))
                    .copied()
                    .unwrap_or(relayed);
                self.inflight_keys.remove(&(peer, id.clone()));
                let ack: Option<MsgAck> = serde_json::from_slice(&response).ok();
                let ok = ack.as_ref().is_some_and(|a| a.ok);
                if !ok {
                    tracing::warn!(%peer, ?ack, "envelope refused by recipient");
                }
                self.spawn(move |store, tx| async move {
                    let to = peer.to_base58();
                    let cid = id.clone();
                    let done = if ok {
                        store.call(move |s| s.delivered(&to, &cid)).await
                    } else {
                        store.call(move |s| s.failed(&to, &cid)).await
                    };
                    if done.is_ok() && ok {
                        let _ = tx.send(Internal::Delivered(peer, id, relayed)).await;
                    }
                });
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "delivery failed: {error}");
                let Some((_, key, _)) = self.inflight.remove(&(Proto::Msg, request_id)) else {
                    return;
                };
                if let Pendingkey::Msg(id) = key {
                    self.inflight_keys.remove(&(peer, id.clone()));
                    self.spawn(move |store, _| async move {
                        let to = peer.to_base58();
                        let _ = store.call(move |s| s.failed(&to, &id)).await;
                    });
                }
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.spawn(move |store, tx| async move {
                    let answer = match serde_json::from_slice::<SyncRequest>(&request) {
                        Err(e) => SyncResponse {
                            error: Some(WireError {
                                code: "bad_request".into(),
                                message: e.to_string(),
                            }),
                            ..Default::default()
                        },
                        Ok(req) => {
                            let asker = peer.to_base58();
                            match store
                                .call(move |s| {
                                    s.answer_sync(&asker, &req.conversation_id, &req.have)
                                })
                                .await
                            {
                                Ok((envelopes, has_more)) => SyncResponse {
                                    envelopes,
                                    has_more,
                                    error: None,
                                },
                                Err(e) => SyncResponse {
                                    error: Some(wire_error(&e)),
                                    ..Default::default()
                                },
                            }
                        }
                    };
                    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                    let _ = tx
                        .send(Internal::Respond(Proto::Sync, channel, bytes))
                        .await;
                });
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, Pendingkey::Sync(conv), _)) =
                    self.inflight.remove(&(Proto::Sync, request_id))
                else {
                    return;
                };
                self.spawn(move |store, tx| async move {
                    let answer: SyncResponse =
                        serde_json::from_slice(&response).unwrap_or_default();
                    let mut progressed = false;
                    for env in answer.envelopes {
                        // Only envelopes of the conversation asked for; each
                        // is checked against its own sender's signature.
                        if env.conversation_id != conv {
                            continue;
                        }
                        match accept(&store, env, "sync").await {
                            Ok((true, messages, _)) => {
                                progressed = true;
                                for m in messages {
                                    // A file first heard of here (not in
                                    // its direct delivery) is fetched from
                                    // its sender, whoever answered the sync.
                                    let owner = m.sender.parse::<PeerId>().ok();
                                    if let (Some(sha), Some(owner)) = (media_id(&m), owner) {
                                        let _ = tx.send(Internal::Download(owner, sha)).await;
                                    }
                                    let _ = tx
                                        .send(Internal::Event(Event::Message { message: m }))
                                        .await;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let error = wire_error(&e);
                                let _ = tx
                                    .send(Internal::Event(Event::Refused {
                                        from: peer.to_base58(),
                                        code: error.code,
                                        message: error.message,
                                    }))
                                    .await;
                            }
                        }
                    }
                    let _ = tx
                        .send(Internal::SyncDone(
                            peer,
                            conv,
                            answer.has_more && progressed,
                        ))
                        .await;
                });
            }
            request_response::Event::OutboundFailure {
                peer, request_id, ..
            } => {
                if let Some((_, Pendingkey::Sync(conv), _)) =
                    self.inflight.remove(&(Proto::Sync, request_id))
                {
                    self.syncing.remove(&(peer, conv));
                }
            }
            _ => {}
        }
    }

    fn on_kp(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        channel, request, ..
                    },
                ..
            } => {
                let start = serde_json::from_slice::<serde_json::Value>(&request)
                    .ok()
                    .and_then(|v| v["start"].as_str().map(str::to_owned));
                let now = Instant::now();
                if self.kp_answered.len() > 1024 {
                    self.kp_answered
                        .retain(|_, at| now.duration_since(*at) < KP_EVERY);
                }
                // How long this asker must still wait, if it was answered
                // less than KP_EVERY ago.
                let wait = self
                    .kp_answered
                    .get(&peer)
                    .map(|at| KP_EVERY.saturating_sub(now.duration_since(*at)))
                    .filter(|left| !left.is_zero());
                let recent = wait.is_some();
                if !recent {
                    self.kp_answered.insert(peer, now);
                }
                let retry_after_ms = wait.map_or(0, |left| left.as_millis() as u64);
                let asker = peer.to_base58();
                if let Some(kp) = start {
                    let key = self.key.clone();
                    self.spawn(move |store, tx| async move {
                        let answer = if recent {
                            serde_json::json!({ "error": "asked too often: try again in a few seconds", "retry_after_ms": retry_after_ms })
                        } else {
                            match store
                                .call(move |s| s.start_direct_for(&key, &asker, &kp))
                                .await
                            {
                                Ok(made) => serde_json::json!({ "started": made }),
                                Err(e) => serde_json::json!({ "error": e.to_string() }),
                            }
                        };
                        let _ = tx.send(Internal::Flush).await;
                        let bytes = answer.to_string().into_bytes();
                        let _ = tx.send(Internal::Respond(Proto::Kp, channel, bytes)).await;
                    });
                    return;
                }
                self.spawn(move |store, tx| async move {
                    let answer = if recent {
                        serde_json::json!({ "error": "key packages asked too often: try again in a few seconds", "retry_after_ms": retry_after_ms })
                    } else {
                        // Only contacts (fellow group members are
                        // contacts) get one.
                        match store
                            .call(move |s| {
                                s.find_contact(&asker)?;
                                s.answer_key_package()
                            })
                            .await
                        {
                            Ok(kp) => serde_json::json!({ "key_package": kp }),
                            Err(e) => serde_json::json!({ "error": e.to_string() }),
                        }
                    };
                    let bytes = answer.to_string().into_bytes();
                    let _ = tx.send(Internal::Respond(Proto::Kp, channel, bytes)).await;
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.kp_waiting.remove(&request_id) {
                    let answer = serde_json::from_slice::<serde_json::Value>(&response)
                        .map_err(|_| "the peer's answer is not JSON".to_owned());
                    let _ = reply.send(answer);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.kp_waiting.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    fn on_file(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.spawn(move |store, tx| async move {
                    let answer = match serve_chunk(&store, peer, &request).await {
                        Ok((chunk, sha256, through)) => {
                            let _ = tx
                                .send(Internal::Event(Event::FileProgress {
                                    sha256,
                                    peer: peer.to_base58(),
                                    direction: "out".into(),
                                    bytes: through,
                                    size: chunk.size,
                                }))
                                .await;
                            chunk
                        }
                        Err(e) => FileChunk {
                            error: Some(WireError {
                                code: "not_found".into(),
                                message: e,
                            }),
                            ..Default::default()
                        },
                    };
                    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                    let _ = tx
                        .send(Internal::Respond(Proto::File, channel, bytes))
                        .await;
                });
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, Pendingkey::File(sha), _)) =
                    self.inflight.remove(&(Proto::File, request_id))
                else {
                    return;
                };
                let data_dir = self.data_dir.clone();
                self.spawn(move |store, tx| async move {
                    match write_chunk(&store, &data_dir, &sha, &response).await {
                        Ok(Written::Done(path)) => {
                            let _ = tx.send(Internal::DownloadStopped(sha.clone())).await;
                            let _ = tx
                                .send(Internal::Event(Event::FileReceived { sha256: sha, path }))
                                .await;
                        }
                        Ok(Written::Partial { have, size }) => {
                            let _ = tx
                                .send(Internal::Event(Event::FileProgress {
                                    sha256: sha.clone(),
                                    peer: peer.to_base58(),
                                    direction: "in".into(),
                                    bytes: have,
                                    size,
                                }))
                                .await;
                            let _ = tx.send(Internal::DownloadStopped(sha.clone())).await;
                            let _ = tx.send(Internal::Download(peer, sha)).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, %sha, "file download: {e}");
                            let _ = tx.send(Internal::DownloadStopped(sha)).await;
                        }
                    }
                });
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, Pendingkey::File(sha), _)) =
                    self.inflight.remove(&(Proto::File, request_id))
                {
                    tracing::debug!(%peer, %sha, %error, "file chunk request failed");
                    // Resumed from the part file's length: soon while the
                    // peer stays connected (the request may have gone down
                    // with one of two connections to it), else on the
                    // next connection.
                    self.downloading.remove(&sha);
                    self.spawn(move |_, tx| async move {
                        tokio::time::sleep(DOWNLOAD_RETRY).await;
                        let _ = tx.send(Internal::Download(peer, sha)).await;
                    });
                }
            }
            _ => {}
        }
    }
}

/// The file a media message refers to (its SHA-256), if any.
fn media_id(m: &StoredMessage) -> Option<String> {
    if !matches!(m.kind.as_str(), kind::FILE | kind::IMAGE | kind::VOICE) {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&m.body).ok()?;
    let sha = body.get("media_id")?.as_str()?;
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sha.to_owned())
}

fn wire_error(e: &StoreError) -> WireError {
    match e {
        StoreError::Refused(r) => WireError {
            code: r.code().into(),
            message: r.to_string(),
        },
        StoreError::Invalid(m) => WireError {
            code: "forbidden".into(),
            message: m.clone(),
        },
        StoreError::NotFound(m) => WireError {
            code: "not_found".into(),
            message: m.clone(),
        },
        other => WireError {
            code: "internal".into(),
            message: other.to_string(),
        },
    }
}

/// Stores a verified envelope; for new `file` envelopes, records the
/// download; opens new `encrypted` ones. Returns (new, the messages to
/// show, a conversation with gaps).
async fn accept(
    store: &SharedStore,
    env: Envelope,
    via: &str,
) -> Result<(bool, Vec<StoredMessage>, Option<String>), StoreError> {
    let via = via.to_owned();
    store
        .call(move |s| {
            let acc = s.accept(&env, &via)?;
            let opened = if acc.new && env.kind == kind::ENCRYPTED {
                s.open_pending(&env.conversation_id)?
            } else {
                Vec::new()
            };
            if acc.new {
                // A file offered in the clear, or inside an encrypted
                // message just opened: recorded, to be fetched from its sender.
                record_offered_file(s, &env.kind, &env.body_json(), &env.sender)?;
                for o in &opened {
                    let body: serde_json::Value =
                        serde_json::from_str(&o.message.body).unwrap_or_default();
                    record_offered_file(s, &o.message.kind, &body, &o.message.sender)?;
                }
            }
            let message = StoredMessage {
                conversation_id: env.conversation_id.clone(),
                sender: env.sender.clone(),
                counter: env.counter,
                client_msg_id: env.client_msg_id.clone(),
                lamport: env.lamport,
                kind: env.kind.clone(),
                body: env.body.clone(),
                via: via.clone(),
                received_ms: crate::store::now_ms(),
            };
            // Encrypted: the messages it let open (itself, and any waiting
            // for the Welcome or commit it was), decrypted.
            let messages = if env.kind == kind::ENCRYPTED {
                let mut messages: Vec<StoredMessage> =
                    opened.into_iter().map(Shown::into_message).collect();
                // A message that could not be opened is shown too, saying
                // why (`{"waiting"|"unreadable": reason}`); once opened it
                // comes again, with the same client_msg_id.
                let is_application =
                    env.body_json().get("mls").and_then(|v| v.as_str()) == Some("application");
                let here = messages
                    .iter()
                    .any(|m| m.sender == env.sender && m.counter == env.counter);
                if acc.new && is_application && !here {
                    messages.extend(s.shown_one(&env)?.map(Shown::into_message));
                }
                messages
            } else {
                vec![message]
            };
            let gaps = (!acc.missing.is_empty()).then(|| env.conversation_id.clone());
            Ok((acc.new, messages, gaps))
        })
        .await
}

/// Records a file offered in a `file`/`image`/`voice` body (not yet
/// fetched; its source is the sender), unless known already.
fn record_offered_file(
    s: &mut crate::store::Store,
    kind_: &str,
    body: &serde_json::Value,
    sender: &str,
) -> Result<(), StoreError> {
    if !matches!(kind_, kind::FILE | kind::IMAGE | kind::VOICE) {
        return Ok(());
    }
    let Some(sha) = body.get("media_id").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let valid = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid || s.file(sha)?.is_some() {
        return Ok(());
    }
    let text = |k: &str, or: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or(or)
            .to_owned()
    };
    s.put_file(&FileRecord {
        sha256: sha.to_owned(),
        path: String::new(),
        size: body.get("size").and_then(|v| v.as_u64()).unwrap_or(0),
        name: text("name", "file"),
        mime: text("mime", ""),
        complete: false,
        source: sender.to_owned(),
    })
}

/// Where received files go: `data_dir/files/<sha256>` (and `.part` while
/// arriving).
pub fn file_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("files").join(sha256)
}

fn part_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("files").join(format!("{sha256}.part"))
}

async fn serve_chunk(
    store: &SharedStore,
    peer: PeerId,
    request: &[u8],
) -> Result<(FileChunk, String, u64), String> {
    let req: FileRequest = serde_json::from_slice(request).map_err(|e| e.to_string())?;
    let sha = req.sha256.clone();
    let answered = req.sha256.clone();
    let asker = peer.to_base58();
    let file = store
        .call(move |s| {
            let f = s.file(&sha)?;
            // Only contacts get bytes (fellow group members are contacts
            // from the group's creation on), and only of complete files.
            let known = s.find_contact(&asker).is_ok();
            Ok(f.filter(|f| f.complete && known))
        })
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no such file here".to_owned())?;
    let offset = req.offset;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&file.path).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(FILE_CHUNK as usize);
        f.take(FILE_CHUNK)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        let through = offset + buf.len() as u64;
        Ok((
            FileChunk {
                size: file.size,
                data: base64::engine::general_purpose::STANDARD.encode(&buf),
                error: None,
            },
            answered,
            through,
        ))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What a chunk did to a download.
enum Written {
    /// More to fetch: bytes so far, of the file's size.
    Partial {
        /// Bytes so far.
        have: u64,
        /// The file's size.
        size: u64,
    },
    /// Whole and checked: where it is.
    Done(String),
}

/// Appends a chunk to the part file (fsynced) and, once the file is whole,
/// checks its SHA-256 before it is moved into place and marked complete.
async fn write_chunk(
    store: &SharedStore,
    data_dir: &Path,
    sha: &str,
    response: &[u8],
) -> Result<Written, String> {
    let chunk: FileChunk = serde_json::from_slice(response).map_err(|e| e.to_string())?;
    if let Some(e) = chunk.error {
        return Err(e.message);
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(&chunk.data)
        .map_err(|e| e.to_string())?;
    let part = part_path(data_dir, sha);
    let done_path = file_path(data_dir, sha);
    let sha2 = sha.to_owned();
    let size = chunk.size;
    let done = tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
        use std::io::Write;
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| e.to_string())?;
        let have = f.metadata().map_err(|e| e.to_string())?.len();
        if have + data.len() as u64 > chunk.size {
            let _ = std::fs::remove_file(&part);
            return Err("peer sent more bytes than the file has".into());
        }
        f.write_all(&data).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        if have + (data.len() as u64) < chunk.size {
            if data.is_empty() {
                return Err("peer sent an empty chunk".into());
            }
            return Ok(Some(have + data.len() as u64));
        }
        let (got, _) = hash_file(&part).map_err(|e| e.to_string())?;
        if got != sha2 {
            let _ = std::fs::remove_file(&part);
            return Err(format!("file hashes to {got}, not {sha2}: discarded"));
        }
        std::fs::rename(&part, &done_path).map_err(|e| e.to_string())?;
        Ok(None)
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(have) = done {
        return Ok(Written::Partial { have, size });
    }
    let path = file_path(data_dir, sha).display().to_string();
    let (sha, p) = (sha.to_owned(), path.clone());
    store
        .call(move |s| {
            if let Some(mut f) = s.file(&sha)? {
                f.complete = true;
                f.path = p;
                s.put_file(&f)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Written::Done(path))
}
