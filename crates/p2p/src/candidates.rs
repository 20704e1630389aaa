//! A tiny behaviour that hands the swarm external address candidates: the
//! address the relay observed us at. DCUtR takes its hole-punch addresses
//! only from candidates, and libp2p-identify offers none for some
//! connections (QUIC), so the node reports the relay's observation itself.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Queues addresses and emits them as `NewExternalAddrCandidate`.
#[derive(Default)]
pub struct Candidates {
    queue: VecDeque<Multiaddr>,
}

impl Candidates {
    /// Offers an address as an external address candidate.
    pub fn offer(&mut self, addr: Multiaddr) {
        // Bounded: only the latest few observations matter.
        if self.queue.len() >= 16 {
            self.queue.pop_front();
        }
        self.queue.push_back(addr);
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
            Some(addr) => Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)),
            None => Poll::Pending,
        }
    }
}
