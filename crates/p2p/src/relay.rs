//! What a Confab server offers peers (`confab serve --p2p-listen …`): a
//! libp2p relay v2 with limits, a rendezvous point, AutoNAT dial-backs and
//! the mailbox. One task owns the swarm; mailbox writes run on the blocking
//! pool. Metrics (process-wide `metrics` facade, exported by the server's
//! /metrics): `confab_p2p_relay_reservations`, `confab_p2p_relay_circuits`,
//! `confab_p2p_mailbox_depth`, `confab_p2p_mailbox_oldest_age_seconds`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use libp2p::futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{autonat, identify, noise, ping, relay, rendezvous, tcp, yamux, Multiaddr, PeerId};
use rand::RngCore;
use tokio::sync::mpsc;

use crate::envelope::DEFAULT_MAX_ENVELOPE_BYTES;
use crate::mailbox::{
    challenge_bytes, MailboxRequest, MailboxResponse, MailboxStore, PutOutcome, MAILBOX_PROTOCOL,
};
use crate::node::NodeError;
use crate::wire::BytesCodec;

/// Relay, rendezvous and mailbox settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Holds the relay's key (`device.key`) and `mailbox.sqlite`.
    pub data_dir: PathBuf,
    /// Most reservations at once.
    pub max_reservations: usize,
    /// Most circuits at once.
    pub max_circuits: usize,
    /// Most circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Longest a circuit lives.
    pub max_circuit_duration: Duration,
    /// Most bytes relayed per circuit.
    pub max_circuit_bytes: u64,
    /// How long the mailbox keeps an envelope.
    pub mailbox_ttl: Duration,
    /// Most envelopes held per recipient.
    pub mailbox_quota: u64,
    /// Shortest registration TTL the rendezvous point grants (peers ask
    /// for 2 h; shorter ones are refused with `InvalidTtl`).
    pub rendezvous_min_ttl: Duration,
    /// Most registrations one peer holds (a Confab peer needs one:
    /// `confab/<its PeerId>`).
    pub rendezvous_max_per_peer: usize,
}

impl RelayConfig {
    /// Defaults for a data dir.
    pub fn new(data_dir: PathBuf, listen: Vec<Multiaddr>) -> RelayConfig {
        RelayConfig {
            listen,
            data_dir,
            max_reservations: 1024,
            max_circuits: 512,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 64 * 1024 * 1024,
            mailbox_ttl: Duration::from_secs(14 * 24 * 3600),
            mailbox_quota: 10_000,
            rendezvous_min_ttl: Duration::from_secs(rendezvous::MIN_TTL),
            rendezvous_max_per_peer: 4,
        }
    }
}

#[derive(NetworkBehaviour)]
struct RelayBehaviour {
    relay: relay::Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    autonat: autonat::Behaviour,
    rendezvous: rendezvous::server::Behaviour,
    mailbox: request_response::Behaviour<BytesCodec>,
}

/// A running relay: its PeerId and listen addresses.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// The relay's PeerId.
    pub peer_id: PeerId,
    /// Where it listens (with `/p2p/<id>`).
    pub addrs: Vec<Multiaddr>,
}

/// Starts the relay; returns once it listens, with its addresses; it runs
/// until `shutdown` completes.
pub async fn start(
    config: RelayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RelayInfo, NodeError> {
    let key = crate::identity::load_or_create(&config.data_dir)?;
    let me = key.public().to_peer_id();
    let mailbox = MailboxStore::open(&config.data_dir, config.mailbox_ttl, config.mailbox_quota)?;
    let relay_config = relay::Config {
        max_reservations: config.max_reservations,
        max_circuits: config.max_circuits,
        max_circuits_per_peer: config.max_circuits_per_peer,
        max_circuit_duration: config.max_circuit_duration,
        max_circuit_bytes: config.max_circuit_bytes,
        ..Default::default()
    };
    let err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let rendezvous_min_ttl = config.rendezvous_min_ttl.as_secs();
    let rendezvous_max_per_peer = config.rendezvous_max_per_peer;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| err(&e))?
        .with_quic()
        .with_behaviour(|key| RelayBehaviour {
            relay: relay::Behaviour::new(me, relay_config),
            ping: ping::Behaviour::new(ping::Config::new()),
            identify: identify::Behaviour::new(
                identify::Config::new("/confab/1.0.0".into(), key.public())
                    .with_agent_version(format!("confab-relay/{}", env!("CARGO_PKG_VERSION"))),
            ),
            autonat: autonat::Behaviour::new(
                me,
                autonat::Config {
                    only_global_ips: false,
                    ..Default::default()
                },
            ),
            rendezvous: rendezvous::server::Behaviour::new(
                rendezvous::server::Config::default()
                    .with_min_ttl(rendezvous_min_ttl)
                    .with_max_registration_per_peer(rendezvous_max_per_peer)
                    // Registrations cost memory only; bound them with the
                    // reservations they come with.
                    .with_max_registration_total(4 * config.max_reservations.max(256)),
            ),
            mailbox: request_response::Behaviour::with_codec(
                BytesCodec {
                    max_request: 4 * DEFAULT_MAX_ENVELOPE_BYTES as u64,
                    max_response: 32 * 1024 * 1024,
                },
                [(MAILBOX_PROTOCOL, ProtocolSupport::Inbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
            ),
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Transport(format!("p2p listen on {addr}: {e}")))?;
    }
    // Wait for the listen addresses so the caller can print them.
    let mut addrs = Vec::new();
    while addrs.len() < config.listen.len() {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                // The relay advertises what it listens on so peers behind NAT
                // get circuit addresses that work.
                swarm.add_external_address(address.clone());
                addrs.push(address.with(libp2p::multiaddr::Protocol::P2p(me)));
            }
            Ok(_) => {}
            Err(_) => return Err(NodeError::Transport("p2p listen did not come up".into())),
        }
    }
    let info = RelayInfo { peer_id: me, addrs };
    let state = RelayLoop {
        me: me.to_base58(),
        mailbox: Arc::new(Mutex::new(mailbox)),
        nonces: HashMap::new(),
        proven: HashMap::new(),
        reservations: 0,
        circuits: 0,
        max_envelope_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
    };
    tokio::spawn(state.run(swarm, shutdown));
    Ok(info)
}

struct RelayLoop {
    me: String,
    mailbox: Arc<Mutex<MailboxStore>>,
    /// Outstanding challenge per peer (one at a time).
    nonces: HashMap<PeerId, String>,
    /// Peers that signed a challenge on a connection still open.
    proven: HashMap<PeerId, ()>,
    reservations: i64,
    circuits: i64,
    max_envelope_bytes: usize,
}

impl RelayLoop {
    async fn run(
        mut self,
        mut swarm: libp2p::Swarm<RelayBehaviour>,
        shutdown: impl Future<Output = ()>,
    ) {
        let (tx, mut rx) = mpsc::channel::<(ResponseChannel<Vec<u8>>, Vec<u8>)>(256);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((channel, bytes)) = rx.recv() => {
                    let _ = swarm.behaviour_mut().mailbox.send_response(channel, bytes);
                }
                _ = tick.tick() => self.publish_mailbox_metrics(),
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(ev)) => self.on_relay(ev),
                    SwarmEvent::Behaviour(RelayBehaviourEvent::Mailbox(request_response::Event::Message {
                        peer,
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    })) => self.on_mailbox(peer, request, channel, tx.clone()),
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                        self.proven.remove(&peer_id);
                        self.nonces.remove(&peer_id);
                    }
                    _ => {}
                },
            }
        }
    }

    fn on_relay(&mut self, ev: relay::Event) {
        match ev {
            relay::Event::ReservationReqAccepted { renewed: false, .. } => self.reservations += 1,
            relay::Event::ReservationClosed { .. } | relay::Event::ReservationTimedOut { .. } => {
                self.reservations = (self.reservations - 1).max(0)
            }
            relay::Event::CircuitReqAccepted { .. } => {
                self.circuits += 1;
                metrics::counter!("confab_p2p_relay_circuits_total").increment(1);
            }
            relay::Event::CircuitClosed { .. } => self.circuits = (self.circuits - 1).max(0),
            _ => {}
        }
        metrics::gauge!("confab_p2p_relay_reservations").set(self.reservations as f64);
        metrics::gauge!("confab_p2p_relay_circuits").set(self.circuits as f64);
    }

    fn publish_mailbox_metrics(&self) {
        let mailbox = self.mailbox.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(m) = mailbox.lock() {
                if let Ok((depth, age)) = m.expire() {
                    metrics::gauge!("confab_p2p_mailbox_depth").set(depth as f64);
                    metrics::gauge!("confab_p2p_mailbox_oldest_age_seconds").set(age);
                }
            }
        });
    }

    fn on_mailbox(
        &mut self,
        peer: PeerId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
        tx: mpsc::Sender<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
    ) {
        let fail = |code: &str| MailboxResponse {
            ok: false,
            error: Some(code.into()),
            ..Default::default()
        };
        let req = match serde_json::from_slice::<MailboxRequest>(&request) {
            Ok(r) => r,
            Err(_) => return respond(tx, channel, fail("bad_request")),
        };
        let peer_s = peer.to_base58();
        match req {
            MailboxRequest::Challenge => {
                let mut nonce = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut nonce);
                let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
                self.nonces.insert(peer, nonce.clone());
                respond(
                    tx,
                    channel,
                    MailboxResponse {
                        ok: true,
                        nonce: Some(nonce),
                        ..Default::default()
                    },
                );
            }
            MailboxRequest::Fetch { nonce, sig } => {
                let expected = self.nonces.remove(&peer);
                let sig = base64::engine::general_purpose::STANDARD
                    .decode(sig)
                    .unwrap_or_default();
                let signed = expected.as_deref() == Some(nonce.as_str())
                    && crate::envelope::public_key_of(&peer)
                        .is_some_and(|k| k.verify(&challenge_bytes(&self.me, &nonce), &sig));
                if !signed {
                    return respond(tx, channel, fail("bad_signature"));
                }
                self.proven.insert(peer, ());
                let mailbox = self.mailbox.clone();
                tokio::spawn(async move {
                    let answer = tokio::task::spawn_blocking(move || {
                        let m = mailbox.lock().map_err(|_| ())?;
                        m.fetch(&peer_s).map_err(|_| ())
                    })
                    .await;
                    let answer = match answer {
                        Ok(Ok((envelopes, has_more))) => MailboxResponse {
                            ok: true,
                            envelopes,
                            has_more,
                            ..Default::default()
                        },
                        _ => MailboxResponse {
                            ok: false,
                            error: Some("internal".into()),
                            ..Default::default()
                        },
                    };
                    respond_async(tx, channel, answer).await;
                });
            }
            MailboxRequest::Ack { ids } => {
                if !self.proven.contains_key(&peer) {
                    return respond(tx, channel, fail("not_proven"));
                }
                self.blocking(tx, channel, move |m| {
                    m.ack(&peer_s, &ids).map(|_| MailboxResponse::ok())
                });
            }
            MailboxRequest::Put {
                recipient,
                envelope,
            } => {
                if envelope.sender != peer_s {
                    return respond(tx, channel, fail("wrong_origin"));
                }
                if let Err(r) = envelope.verify(self.max_envelope_bytes) {
                    return respond(tx, channel, fail(r.code()));
                }
                if recipient.parse::<PeerId>().is_err() {
                    return respond(tx, channel, fail("bad_request"));
                }
                self.blocking(tx, channel, move |m| {
                    m.put(&recipient, &envelope).map(|o| match o {
                        PutOutcome::Stored => MailboxResponse::ok(),
                        PutOutcome::QuotaExceeded => MailboxResponse {
                            ok: false,
                            error: Some("quota_exceeded".into()),
                            ..Default::default()
                        },
                    })
                });
            }
        }
    }

    fn blocking<F>(
        &self,
        tx: mpsc::Sender<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
        channel: ResponseChannel<Vec<u8>>,
        f: F,
    ) where
        F: FnOnce(&MailboxStore) -> Result<MailboxResponse, crate::store::StoreError>
            + Send
            + 'static,
    {
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            let answer = tokio::task::spawn_blocking(move || {
                let m = mailbox.lock().map_err(|_| ())?;
                f(&m).map_err(|_| ())
            })
            .await;
            let answer = match answer {
                Ok(Ok(a)) => a,
                _ => MailboxResponse {
                    ok: false,
                    error: Some("internal".into()),
                    ..Default::default()
                },
            };
            respond_async(tx, channel, answer).await;
        });
    }
}

impl MailboxResponse {
    fn ok() -> MailboxResponse {
        MailboxResponse {
            ok: true,
            ..Default::default()
        }
    }
}

fn respond(
    tx: mpsc::Sender<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
    channel: ResponseChannel<Vec<u8>>,
    answer: MailboxResponse,
) {
    tokio::spawn(respond_async(tx, channel, answer));
}

async fn respond_async(
    tx: mpsc::Sender<(ResponseChannel<Vec<u8>>, Vec<u8>)>,
    channel: ResponseChannel<Vec<u8>>,
    answer: MailboxResponse,
) {
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let _ = tx.send((channel, bytes)).await;
}
