//! A tiny behaviour that hands the swarm the address the relay observed us
//! at: first as an external address *candidate*, then as confirmed.
//!
//! DCUtR takes its hole-punch addresses only from candidates
//! (`FromSwarm::NewExternalAddrCandidate`), and the swarm drops a candidate
//! that is already a confirmed external address. Confirming the observed
//! address straight from the identify event (as the node once did) beat
//! identify's own candidate event, which comes after it: DCUtR never heard
//! of any address and every hole punch ended in "Protocol error" (a
//! CONNECT with no addresses). Emitting both from here, in this order,
//! gives DCUtR the candidate and `status` the external address.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Queues addresses and emits each as `NewExternalAddrCandidate`, then
/// `ExternalAddrConfirmed`.
#[derive(Default)]
pub struct Candidates {
    queue: VecDeque<(Multiaddr, bool)>,
}

impl Candidates {
    /// Offers an address as an external address candidate (then confirms it).
    pub fn offer(&mut self, addr: Multiaddr) {
        // Bounded: only the latest few observations matter.
        while self.queue.len() >= 16 {
            self.queue.pop_front();
        }
        self.queue.push_back((addr.clone(), false));
        self.queue.push_back((addr, true));
    }
}

impl NetworkBehaviour for Candidates {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.queue.pop_front() {
            Some((addr, false)) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)),
            Some((addr, true)) => Poll::Ready(ToSwarm::ExternalAddrConfirmed(addr)),
            None => Poll::Pending,
        }
    }
}
