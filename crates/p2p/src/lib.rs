//! Confab's peer-to-peer mode (DESIGN §7): devices talk directly over
//! libp2p, with no server, or through a Confab relay across NATs.
//!
//! Sans-IO parts, tested without a network: [`envelope`] (signing and
//! checks), [`ordering`] (Lamport order, per-sender gaps), [`link`]
//! (`confab://` links). The peer's SQLite file is [`store`]; the device key
//! is [`identity`].

pub mod candidates;
pub mod control;
pub mod envelope;
pub mod identity;
pub mod link;
pub mod mailbox;
pub mod mls;
pub mod ordering;
pub mod relay;
pub mod store;

pub use envelope::{Envelope, Refusal};
pub use store::{direct_conversation_id, SharedStore, Store, StoreError};
pub mod node;
pub mod wire;

pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Event, Node, NodeConfig, NodeError};
