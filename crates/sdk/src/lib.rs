//! Confab's Rust client SDK.
//!
//! - [`Client`]: the HTTP API (accounts, users, conversations, history,
//!   sending over HTTP). Cheap to clone; refreshes an expired access token
//!   once, automatically, and retries.
//! - [`Connection`]: a WebSocket that reconnects with backoff until it is
//!   closed or its session is revoked (logout elsewhere, password change). It
//!   delivers [`Event::Message`] exactly once and in seq order per
//!   conversation with no gaps (reordering, deduplicating and syncing as
//!   needed), and keeps sent messages in an outbox until the server acks
//!   them, resending after reconnects.
//! - [`RawConnection`]: a bare socket, frame by frame, for tests and benchmarks.
//!
//! ```no_run
//! use std::time::Duration;
//! use confab_sdk::{Client, ConnectOptions, Event};
//!
//! # async fn demo() -> confab_sdk::Result<()> {
//! let client = Client::new("http://127.0.0.1:8080");
//! client.register("ann", "correct horse", Some("Ann")).await?;
//! client.login("ann", "correct horse", Some("laptop")).await?;
//! let bob = client.search_users("bob").await?;
//! let conv = client.direct_conversation(bob[0].id).await?;
//!
//! let mut conn = client.connect(ConnectOptions::default())?;
//! conn.wait_synced(Duration::from_secs(5)).await?;
//! let ack = conn.send_text(conv.id, "hi bob").await?;
//! println!("stored as seq {}", ack.seq);
//! while let Some(event) = conn.next_event().await {
//!     if let Event::Message(m) = event {
//!         println!("{} #{}: {}", m.conversation_id, m.seq, m.body);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod actor;
mod api;
mod backoff;
mod client;
mod connection;
pub mod e2ee;
mod error;
mod event;
mod link;
mod media;
mod messages;
pub mod ordering;
mod outbox;
pub mod raw;
mod receive;
mod session;
mod social;
mod trust;

pub use api::{new_client_msg_id, HistoryQuery};
pub use backoff::BackoffConfig;
pub use client::Client;
pub use connection::{ConnectOptions, Connection, ConnectionHandle, PendingAck};
pub use e2ee::{safety_number, Attachment, DeviceKey, E2ee, E2eeContent, E2eeMessage};
pub use error::{Error, Result};
pub use event::{Ack, Event};
pub use media::{guess_content_type, Progress};
pub use messages::SearchOptions;
pub use raw::RawConnection;
pub use session::{ws_url, Session};
pub use social::Direction;
pub use trust::CA_CERT_ENV;

/// The wire protocol crate, re-exported so callers need not depend on it.
pub use confab_proto as proto;
pub use confab_proto::api::PresenceStatus;
pub use confab_proto::api::{Conversation, MessagePage, UpdateProfileRequest, User};
pub use confab_proto::api::{IceServer, IceServers};
pub use confab_proto::frame::{CallSignal, ReceiptKind, TypingState};
pub use confab_proto::{
    ApiError, ConversationId, ErrorCode, MessageKind, MessageRecord, Seq, UserId,
};
pub use confab_proto::{Event as ServerEvent, SystemNotice};
