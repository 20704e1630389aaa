//! The Confab wire protocol, shared by the server, the SDK, the CLI and the tests.
//!
//! This crate is sans-IO: it defines frame and API types, error codes and the
//! validation rules for what comes in from outside, and nothing here touches a
//! socket, a file or a clock. Everything that crosses the wire is named here,
//! so a change to the wire shows up as a change to this crate (and fails its
//! snapshot tests).

pub mod api;
pub mod e2ee;
pub mod error;
pub mod event;
pub mod frame;
pub mod ids;
pub mod media;
pub mod message;
pub mod validate;

pub use error::{ApiError, ErrorBody, ErrorCode};
pub use event::{Event, SystemNotice};
pub use frame::{CallSignal, ClientFrame, ServerFrame};
pub use ids::{ConversationId, DeviceId, Millis, Seq, UserId};
pub use message::{MessageKind, MessageRecord};
