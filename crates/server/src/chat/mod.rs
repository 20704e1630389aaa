//! The rules of chat that both doors (the HTTP handlers and the WebSocket
//! gateway) apply, written once: what a send must satisfy before it is
//! queued for commit ([`send`]), who may reach whom ([`blocks`]), what a
//! media message must say about its upload ([`media`]), and who counts as a
//! member ([`membership`]), and how calls ring and end ([`calls`], with
//! their STUN/TURN servers in [`ice`]). This layer knows no transport: it imports
//! neither door, and takes the store and the committer it needs as
//! arguments.

pub mod blocks;
pub mod calls;
pub mod e2ee;
pub mod ice;
pub mod media;
pub mod membership;
pub mod send;
