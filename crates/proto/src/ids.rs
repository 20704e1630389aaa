//! Identifier types. Ids are server-assigned 64-bit integers; `seq` numbers
//! start at 1 in every conversation and have no gaps.

/// A user account.
pub type UserId = i64;
/// One device (login) of a user; tokens and delivery cursors belong to it.
pub type DeviceId = i64;
/// A direct or group conversation.
pub type ConversationId = i64;
/// Position of a message within its conversation: 1, 2, 3, … with no gaps.
pub type Seq = i64;
/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;
