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
pub mod chat;
mod clock;
pub mod committer;
pub mod config;
pub mod error;
pub mod events;
pub mod extract;
pub mod gateway;
mod hex;
pub mod http;
pub mod hub;
mod listener;
pub mod media;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod outbound;
pub mod presence;
pub mod refusal;
mod server;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod uploads;

pub use config::Config;
pub use server::{app, openapi, routes, run, ServerError};
