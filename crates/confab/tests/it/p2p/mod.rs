//! Peer-to-peer mode with real `confab p2p` processes: on a LAN of network
//! namespaces, across NATs through a `confab serve --p2p-listen` relay and
//! mailbox, in groups, and against a js-libp2p node.

pub(crate) mod support;

mod encrypted;
mod group;
mod interop;
mod lan;
mod mailbox;
mod nat;
mod receipts;
