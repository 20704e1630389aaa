//! The Confab server: HTTP API, WebSocket gateway, group commit and local
//! delivery, wired together by [`run`].
//!
//! Data flow of a message: a connection task ([`gateway`]) validates a
//! `send` and queues it at the [`committer`]; the committer commits a batch
//! in one transaction through the [`confab_store::Store`], acks each sender
//! and publishes each new message once on the [`confab_bus::Bus`]; the bus
//! hands it to the [`hub`] of every interested node, which pushes the same
//! encoded bytes into each recipient connection's outbound queue.

pub mod auth;
mod clock;
pub mod committer;
pub mod config;
pub mod error;
pub mod events;
pub mod gateway;
pub mod http;
pub mod hub;
mod listener;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod presence;
mod send;
mod server;
pub mod state;

pub use config::Config;
pub use server::{run, ServerError};
