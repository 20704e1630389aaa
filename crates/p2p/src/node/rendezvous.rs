//! Rendezvous (DESIGN §7): a peer with `--relay` registers at its relay's
//! rendezvous point, and a contact that cannot be reached at its known
//! addresses is looked up there, then dialled at what it registered.
//!
//! The namespace is `confab/<PeerId>`, one per peer: the rendezvous
//! protocol discovers by namespace only, so a shared `confab` namespace
//! would hand anyone who asks the whole directory of peers and addresses,
//! and a lookup of one contact would page through everyone. Knowing a
//! peer's namespace needs its PeerId, i.e. its link. Anyone may register
//! *itself* under another peer's namespace (the point only checks that the
//! signed peer record is the registrant's own), so only records signed by
//! the contact itself are used, and every dial authenticates the PeerId
//! with Noise anyway.
//!
//! What a peer registers is the swarm's external addresses: the relayed
//! address (`…/p2p/<relay>/p2p-circuit`, confirmed by the relay client
//! when the reservation is accepted) and the addresses confirmed from what
//! the relay observes (`candidates.rs`). The client behaviour registers
//! again by itself whenever those change; this loop also renews after two
//! thirds of the TTL, retries a failure after [`RETRY_AFTER`], and
//! registers anew after the reservation is remade.
//!
//! Where a contact is looked up: our own relay, and the relay its link
//! names (a different server is dialled for the lookup).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::rendezvous::{self, Namespace};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{is_relayed, Event, Loop};

/// Namespaces are `confab/<PeerId>`.
pub const NAMESPACE_PREFIX: &str = "confab/";

/// The TTL a peer asks for by default: libp2p's default, which every
/// rendezvous point accepts (its recommended minimum is the same 2 h).
pub const DEFAULT_TTL: Duration = Duration::from_secs(rendezvous::DEFAULT_TTL);

/// How long after a failed registration it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// How often one contact is looked up at most.
const LOOKUP_EVERY: Duration = Duration::from_secs(10);

/// How long a dial of found addresses may hold up the regular redials
/// (see [`State::found_dial_pending`]).
const FOUND_DIAL_HOLD: Duration = Duration::from_secs(30);

/// Most addresses taken from one registration.
const MAX_FOUND_ADDRS: usize = 16;

/// The namespace a peer registers under.
pub fn namespace_of(peer: &PeerId) -> Namespace {
    // A PeerId is at most ~60 characters: far below the 255-byte limit.
    Namespace::new(format!("{NAMESPACE_PREFIX}{peer}"))
        .unwrap_or_else(|_| Namespace::from_static("confab/"))
}

/// The peer a namespace belongs to.
pub fn peer_of_namespace(ns: &Namespace) -> Option<PeerId> {
    ns.to_string().strip_prefix(NAMESPACE_PREFIX)?.parse().ok()
}

/// This device's registration, in `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RendezvousStatus {
    /// The rendezvous point (the relay's PeerId).
    pub point: String,
    /// `confab/<own PeerId>`.
    pub namespace: String,
    /// `waiting` (no reservation or no external address yet),
    /// `registering`, `registered` or `failed`.
    pub state: String,
    /// TTL the point granted (or, before that, asked for), seconds.
    pub ttl_s: u64,
    /// Seconds until the registration runs out (when registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// Seconds until it is renewed (when registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews_in_s: Option<u64>,
    /// Successful registrations so far (the first and every renewal).
    pub registrations: u64,
    /// The addresses the last successful registration carried.
    pub addrs: Vec<String>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Registration at our relay.
struct Registrar {
    point: PeerId,
    ttl: Duration,
    /// A request is out.
    pending: bool,
    last_attempt: Option<Instant>,
    /// When the point last answered `OK`, with the granted TTL.
    registered: Option<(Instant, Duration)>,
    count: u64,
    addrs: Vec<Multiaddr>,
    error: Option<String>,
}

impl Registrar {
    fn due(&self, now: Instant) -> bool {
        if self.pending {
            return false;
        }
        match (self.registered, self.last_attempt) {
            (Some((at, ttl)), _) => now >= at + ttl * 2 / 3,
            (None, Some(last)) if self.error.is_some() => now >= last + RETRY_AFTER,
            _ => true,
        }
    }

    fn status(&self, me: &PeerId, now: Instant) -> RendezvousStatus {
        let registered = self.registered.filter(|(at, ttl)| now < *at + *ttl);
        let state = if self.pending {
            "registering"
        } else if registered.is_some() {
            "registered"
        } else if self.error.is_some() {
            "failed"
        } else {
            "waiting"
        };
        RendezvousStatus {
            point: self.point.to_base58(),
            namespace: namespace_of(me).to_string(),
            state: state.into(),
            ttl_s: registered.map_or(self.ttl, |(_, t)| t).as_secs(),
            expires_in_s: registered.map(|(at, ttl)| (at + ttl - now).as_secs()),
            renews_in_s: registered
                .map(|(at, ttl)| (at + ttl * 2 / 3).saturating_duration_since(now).as_secs()),
            registrations: self.count,
            addrs: self.addrs.iter().map(|a| a.to_string()).collect(),
            error: self.error.clone(),
        }
    }
}

/// The loop's rendezvous state.
pub(super) struct State {
    registrar: Option<Registrar>,
    /// Relays contacts' links name (contact → relay address).
    contact_relays: HashMap<PeerId, Multiaddr>,
    /// Rendezvous points other than our relay, and their addresses.
    points: HashMap<PeerId, Multiaddr>,
    /// Lookups waiting for a connection to their point.
    wanted: HashMap<PeerId, HashSet<PeerId>>,
    last_lookup: HashMap<PeerId, Instant>,
    /// Addresses found per contact (until the registration's TTL ends).
    found: HashMap<PeerId, (Vec<Multiaddr>, Instant)>,
    /// When found addresses were last dialled, per contact.
    found_dials: HashMap<PeerId, Instant>,
}

impl State {
    pub(super) fn new(relay: Option<PeerId>, ttl: Duration) -> State {
        State {
            registrar: relay.map(|point| Registrar {
                point,
                ttl,
                pending: false,
                last_attempt: None,
                registered: None,
                count: 0,
                addrs: Vec::new(),
                error: None,
            }),
            contact_relays: HashMap::new(),
            points: HashMap::new(),
            wanted: HashMap::new(),
            last_lookup: HashMap::new(),
            found: HashMap::new(),
            found_dials: HashMap::new(),
        }
    }

    /// Whether `peer` is a rendezvous point we use (not a contact).
    pub(super) fn is_point(&self, peer: &PeerId) -> bool {
        self.points.contains_key(peer)
    }

    /// Remembers the relay a contact's link names.
    pub(super) fn contact_relay(&mut self, contact: PeerId, relay: Multiaddr) {
        if relay_peer_of(&relay).is_some_and(|r| r != contact) {
            self.contact_relays.insert(contact, relay);
        }
    }

    /// Addresses found for a contact that are still valid.
    pub(super) fn found(&self, contact: &PeerId) -> Vec<Multiaddr> {
        self.found
            .get(contact)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(a, _)| a.clone())
            .unwrap_or_default()
    }

    /// Whether a dial of found addresses may still be pending. A found
    /// address can be stale too (the contact restarted on another port and
    /// has not registered again yet), and a dial to it can hang until the
    /// transport gives up (a firewall drops the packets): the regular
    /// redials (the circuit through our relay) must not wait for it.
    pub(super) fn found_dial_pending(&self, contact: &PeerId) -> bool {
        self.found_dials
            .get(contact)
            .is_some_and(|t| t.elapsed() < FOUND_DIAL_HOLD)
    }

    /// Contacts with addresses found.
    pub(super) fn found_peers(&self) -> Vec<PeerId> {
        self.found.keys().copied().collect()
    }

    pub(super) fn status(&self, me: &PeerId) -> Option<RendezvousStatus> {
        Some(self.registrar.as_ref()?.status(me, Instant::now()))
    }
}

/// The PeerId at the end of a relay address.
fn relay_peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl Loop {
    /// Registers (or renews) at our relay when it is due: the reservation
    /// stands, so the relayed address is among the external ones.
    pub(super) fn rendezvous_tick(&mut self) {
        let now = Instant::now();
        let reserved = self.reservation.is_some();
        let relayed_external = self.swarm.external_addresses().any(is_relayed);
        let connected = self.relay_peer.is_some_and(|p| self.is_connected(&p));
        let Some(reg) = self.rdv.registrar.as_mut() else {
            return;
        };
        let point = reg.point;
        if !reserved || !relayed_external || !connected || !reg.due(now) {
            return;
        }
        let ttl = reg.ttl.as_secs();
        reg.last_attempt = Some(now);
        match self.swarm.behaviour_mut().rendezvous.register(
            namespace_of(&self.me),
            point,
            Some(ttl),
        ) {
            Ok(()) => {
                if let Some(reg) = self.rdv.registrar.as_mut() {
                    reg.pending = true;
                }
            }
            Err(e) => {
                if let Some(reg) = self.rdv.registrar.as_mut() {
                    reg.error = Some(e.to_string());
                }
            }
        }
    }

    /// We are stopping: withdraws our registration at the point, so
    /// lookups stop handing out a relayed address that is about to die.
    /// True when an unregistration was sent (the swarm must run a moment
    /// for it to leave).
    pub(super) fn rendezvous_unregister(&mut self) -> bool {
        let connected = self.relay_peer.is_some_and(|p| self.is_connected(&p));
        let Some(reg) = self.rdv.registrar.as_mut() else {
            return false;
        };
        let was = reg.registered.take().is_some() || std::mem::take(&mut reg.pending);
        if !was || !connected {
            return false;
        }
        let point = reg.point;
        self.swarm
            .behaviour_mut()
            .rendezvous
            .unregister(namespace_of(&self.me), point);
        true
    }

    /// Our relay connection is gone: the registered relayed address is
    /// dead, so register again once the reservation is back.
    pub(super) fn rendezvous_relay_lost(&mut self) {
        if let Some(reg) = self.rdv.registrar.as_mut() {
            reg.registered = None;
            reg.pending = false;
        }
    }

    /// Looks a contact up at every rendezvous point we know for it (at
    /// most once per [`LOOKUP_EVERY`]).
    pub(super) fn lookup(&mut self, contact: PeerId) {
        if contact == self.me || self.is_connected(&contact) {
            return;
        }
        let now = Instant::now();
        if self
            .rdv
            .last_lookup
            .get(&contact)
            .is_some_and(|t| now.duration_since(*t) < LOOKUP_EVERY)
        {
            return;
        }
        let mut points: Vec<(PeerId, Option<Multiaddr>)> = Vec::new();
        if let Some(own) = self.relay_peer {
            points.push((own, None));
        }
        if let Some(addr) = self.rdv.contact_relays.get(&contact).cloned() {
            if let Some(p) = relay_peer_of(&addr) {
                if Some(p) != self.relay_peer {
                    points.push((p, Some(addr)));
                }
            }
        }
        if points.is_empty() {
            return;
        }
        self.rdv.last_lookup.insert(contact, now);
        for (point, addr) in points {
            if self.is_connected(&point) {
                self.discover_at(point, contact);
                continue;
            }
            self.rdv.wanted.entry(point).or_default().insert(contact);
            // Our own relay: the relay client (re)connects it, and a dial of
            // ours racing the reservation's made it fail. Another relay:
            // dial it for the lookup.
            if let Some(addr) = addr {
                self.rdv.points.insert(point, addr.clone());
                let opts = DialOpts::peer_id(point)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(vec![addr])
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%point, "dial rendezvous point: {e}");
                }
            }
        }
        // Bounded: a lookup that never got its connection is dropped.
        self.rdv
            .last_lookup
            .retain(|_, t| now.duration_since(*t) < 10 * LOOKUP_EVERY);
    }

    fn discover_at(&mut self, point: PeerId, contact: PeerId) {
        self.swarm.behaviour_mut().rendezvous.discover(
            Some(namespace_of(&contact)),
            None,
            Some(8),
            point,
        );
    }

    /// A connection to a rendezvous point opened: send the lookups that
    /// waited for it.
    pub(super) fn rendezvous_connected(&mut self, point: PeerId) {
        if let Some(contacts) = self.rdv.wanted.remove(&point) {
            for c in contacts {
                self.discover_at(point, c);
            }
        }
    }

    pub(super) fn on_rendezvous(&mut self, ev: rendezvous::client::Event) {
        use rendezvous::client::Event as E;
        match ev {
            E::Registered {
                rendezvous_node,
                ttl,
                namespace,
            } => {
                let addrs: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
                let Some(reg) = self.rdv.registrar.as_mut() else {
                    return;
                };
                reg.pending = false;
                reg.error = None;
                reg.registered = Some((Instant::now(), Duration::from_secs(ttl)));
                reg.count += 1;
                reg.addrs = addrs.clone();
                self.emit(Event::RendezvousRegistered {
                    rendezvous: rendezvous_node.to_base58(),
                    namespace: namespace.to_string(),
                    ttl_s: ttl,
                    addrs: addrs.iter().map(|a| a.to_string()).collect(),
                });
            }
            E::RegisterFailed {
                rendezvous_node,
                error,
                ..
            } => {
                tracing::warn!(%rendezvous_node, ?error, "rendezvous registration failed");
                if let Some(reg) = self.rdv.registrar.as_mut() {
                    reg.pending = false;
                    reg.registered = None;
                    reg.error = Some(format!("{error:?}"));
                }
            }
            E::Discovered {
                rendezvous_node,
                registrations,
                cookie,
            } => {
                let asked = cookie.namespace().and_then(peer_of_namespace);
                if let Some(contact) = asked {
                    if !registrations.iter().any(|r| r.record.peer_id() == contact) {
                        self.emit(Event::RendezvousNotFound {
                            peer: contact.to_base58(),
                            rendezvous: rendezvous_node.to_base58(),
                        });
                    }
                }
                for r in registrations {
                    let Some(contact) = peer_of_namespace(&r.namespace) else {
                        continue;
                    };
                    // Only the contact's own signed record counts.
                    if r.record.peer_id() != contact || contact == self.me {
                        continue;
                    }
                    let addrs: Vec<Multiaddr> = r
                        .record
                        .addresses()
                        .iter()
                        .take(MAX_FOUND_ADDRS)
                        .cloned()
                        .collect();
                    if addrs.is_empty() {
                        continue;
                    }
                    let until = Instant::now() + Duration::from_secs(r.ttl);
                    self.rdv.found.insert(contact, (addrs.clone(), until));
                    self.emit(Event::RendezvousDiscovered {
                        peer: contact.to_base58(),
                        rendezvous: rendezvous_node.to_base58(),
                        addrs: addrs.iter().map(|a| a.to_string()).collect(),
                    });
                    if self.is_connected(&contact) {
                        continue;
                    }
                    // A dial to stale addresses may still be hanging
                    // (a dropped SYN): dial these beside it.
                    let now = Instant::now();
                    self.rdv
                        .found_dials
                        .retain(|_, t| now.duration_since(*t) < FOUND_DIAL_HOLD);
                    self.rdv.found_dials.insert(contact, now);
                    let opts = DialOpts::peer_id(contact)
                        .condition(PeerCondition::Disconnected)
                        .addresses(addrs)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%contact, "dial found addresses: {e}");
                    }
                }
            }
            E::DiscoverFailed {
                rendezvous_node,
                namespace,
                error,
            } => {
                tracing::debug!(%rendezvous_node, ?namespace, ?error, "rendezvous lookup failed");
            }
            E::Expired { peer } => {
                self.rdv.found.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_name_one_peer() {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let ns = namespace_of(&peer);
        assert_eq!(ns.to_string(), format!("confab/{peer}"));
        assert_eq!(peer_of_namespace(&ns), Some(peer));
        assert_eq!(peer_of_namespace(&Namespace::from_static("confab")), None);
        assert_eq!(
            peer_of_namespace(&Namespace::from_static("other/12D3KooW")),
            None
        );
    }

    #[test]
    fn registrations_renew_after_two_thirds_and_retry_after_failures() {
        let point = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let now = Instant::now();
        let mut r = Registrar {
            point,
            ttl: Duration::from_secs(90),
            pending: false,
            last_attempt: None,
            registered: None,
            count: 0,
            addrs: Vec::new(),
            error: None,
        };
        assert!(r.due(now), "never registered");
        r.pending = true;
        assert!(!r.due(now), "one request at a time");
        r.pending = false;
        r.registered = Some((now, Duration::from_secs(90)));
        assert!(!r.due(now + Duration::from_secs(59)));
        assert!(
            r.due(now + Duration::from_secs(60)),
            "renewed at 2/3 of the TTL"
        );
        let s = r.status(&point, now + Duration::from_secs(30));
        assert_eq!(s.state, "registered");
        assert_eq!(s.expires_in_s, Some(60));
        assert_eq!(s.renews_in_s, Some(30));
        assert_eq!(
            r.status(&point, now + Duration::from_secs(91)).state,
            "waiting"
        );
        r.registered = None;
        r.error = Some("Unavailable".into());
        r.last_attempt = Some(now);
        assert!(!r.due(now + Duration::from_secs(9)));
        assert!(r.due(now + RETRY_AFTER));
        assert_eq!(r.status(&point, now).state, "failed");
    }
}
