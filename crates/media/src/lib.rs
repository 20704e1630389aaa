//! Confab's media parsers, kept apart from the server so they can be
//! fuzzed without its dependency tree (issue 15): what uploaded bytes are
//! ([`sniff`]), image checks, metadata clean-up and thumbnails
//! ([`images`]), and the headers of tus resumable uploads
//! ([`tus_headers`]).
//!
//! Nothing here touches the network; [`images`] reads and writes the
//! files it is handed (or any `Read`/`Write`).

pub mod images;
pub mod sniff;
pub mod tus_headers;
