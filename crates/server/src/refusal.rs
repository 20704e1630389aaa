//! Why a write was refused, in words: the store answers a refused write
//! with an [`ErrorCode`] (`WriteOutcome::Rejected`), and this is the one
//! place that turns it into the error a client sees, for the WebSocket
//! `error` frame and the HTTP error alike.

use confab_proto::{ApiError, ErrorCode};
use confab_store::WriteOp;

/// What kind of write was refused (the same code means different things
/// for a message and for a group change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A new message, or a cursor move (read, delivered) in a conversation.
    Send,
    /// An edit, deletion or reaction.
    MessageChange,
    /// A membership or settings change of a group.
    GroupChange,
}

impl WriteKind {
    /// The kind of `op`.
    pub fn of(op: &WriteOp) -> WriteKind {
        match op {
            WriteOp::Message { .. } => WriteKind::MessageChange,
            WriteOp::Group { .. } => WriteKind::GroupChange,
            _ => WriteKind::Send,
        }
    }
}

/// Not a member of the conversation now, but once was.
pub const FORMER_MEMBER: &str = "you are no longer a member of this conversation";
/// Not a member, never was, or no such conversation.
pub const NOT_A_MEMBER: &str = "no such conversation, or you are not a member of it";
/// A block either way between the two users of a direct conversation.
pub const BLOCKED: &str = "this user cannot be messaged: one of you blocked the other";
/// `chat.direct_messages = "friends"` and the two are not friends.
pub const NOT_FRIENDS: &str = "this server allows direct messages only between friends";

/// An `encrypted` message named an MLS epoch that is not the current one.
pub const EPOCH_CONFLICT: &str = "another commit moved this conversation to a newer MLS epoch first: apply the messages after your last seq (the winning commit among them) and send again";
/// A plain message (or one without `mls`/`epoch`) in an encrypted conversation.
pub const ENCRYPTION_REQUIRED: &str = "this conversation is end-to-end encrypted: send `encrypted` messages with \"mls\" and \"epoch\"";

/// The error for a write of `kind` that the store refused with `code`.
pub fn refusal(kind: WriteKind, code: ErrorCode) -> ApiError {
    let text = match (kind, code) {
        (WriteKind::MessageChange, ErrorCode::NotFound) => "no such message, or you cannot see it",
        (WriteKind::MessageChange, ErrorCode::Forbidden) => "you may not change this message",
        (WriteKind::MessageChange, ErrorCode::BadRequest) => {
            "this message cannot be changed that way"
        }
        (WriteKind::GroupChange, ErrorCode::NotFound) => "no such group, or no such member in it",
        (WriteKind::GroupChange, ErrorCode::Forbidden) => {
            "your role in this group does not allow that"
        }
        (WriteKind::GroupChange, ErrorCode::BadRequest) => "not possible in this conversation",
        (_, ErrorCode::GroupFull) => "the group is at its member limit",
        (_, ErrorCode::NotFound) => NOT_A_MEMBER,
        (_, ErrorCode::Forbidden) => FORMER_MEMBER,
        (_, ErrorCode::Blocked) => BLOCKED,
        (_, ErrorCode::NotFriends) => NOT_FRIENDS,
        (_, ErrorCode::EpochConflict) => EPOCH_CONFLICT,
        (_, ErrorCode::EncryptionRequired) => ENCRYPTION_REQUIRED,
        _ => "refused",
    };
    ApiError::new(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_code_reads_differently_per_kind() {
        let send = refusal(WriteKind::Send, ErrorCode::Forbidden);
        let group = refusal(WriteKind::GroupChange, ErrorCode::Forbidden);
        assert_eq!(send.message, FORMER_MEMBER);
        assert_ne!(send.message, group.message);
        assert_eq!(group.code, ErrorCode::Forbidden);
        assert_eq!(
            refusal(WriteKind::Send, ErrorCode::Blocked).message,
            BLOCKED
        );
    }
}
