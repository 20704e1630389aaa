//! `confab chat`: the full-screen terminal chat app.
//!
//! Sans-IO core: [`App`] holds the state, turns keys ([`App::on_key`]) and
//! outside events ([`App::on_event`]) into [`Command`]s, and draws itself
//! ([`App::render`]). The [`Runner`] executes the commands with the SDK and
//! feeds results back as [`AppEvent`]s; [`P2pRunner`] does the same on the
//! peer-to-peer backend (`confab chat --p2p`); [`terminal`] wires either to
//! a real terminal.

pub mod app;
pub mod chat;
pub mod commands;
pub mod events;
pub mod format;
pub mod input;
pub mod login;
mod p2p_e2ee;
pub mod p2p_map;
pub mod p2p_runner;
pub mod requests;
pub mod runner;
pub mod terminal;
pub mod view;

pub use app::{App, Focus, Link, Overlay};
pub use chat::{Chat, Tick, Upload};
pub use commands::{AppEvent, Command};
pub use p2p_runner::{P2pRunError, P2pRunner};
pub use runner::{Runner, RunnerOptions};
