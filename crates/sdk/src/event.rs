//! What a [`Connection`](crate::Connection) hands to the application.

use confab_proto::api::PresenceStatus;
use confab_proto::frame::{CallSignal, ReceiptKind, TypingState};
use confab_proto::ids::Millis;
use confab_proto::Event as ServerEvent;
use confab_proto::{ApiError, ConversationId, DeviceId, MessageRecord, Seq, ServerFrame, UserId};
use serde_json::Value;

/// The server's confirmation that a sent message is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The idempotency key the message was sent with.
    pub client_msg_id: String,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// The message's seq (the original one if it was a resend).
    pub seq: Seq,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts: Millis,
}

impl From<confab_proto::api::SendMessageResponse> for Ack {
    fn from(r: confab_proto::api::SendMessageResponse) -> Self {
        Ack {
            client_msg_id: r.client_msg_id,
            conversation_id: r.conversation_id,
            seq: r.seq,
            ts: r.ts,
        }
    }
}

/// One thing that happened on a connection, in the order it happened.
///
/// [`Event::Message`] is delivered exactly once and in seq order per
/// conversation, with no gaps, across reconnects.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A (re)connection is established and authenticated (`hello` received).
    Connected {
        /// The authenticated user.
        user_id: UserId,
        /// The authenticated device.
        device_id: DeviceId,
    },
    /// The connection was lost; the SDK is reconnecting.
    Disconnected {
        /// Why, for logs.
        reason: String,
    },
    /// After a (re)connect: everything that was missed has been delivered.
    SyncComplete,
    /// A message, next in its conversation's seq order.
    Message(MessageRecord),
    /// A member's delivered or read cursor moved.
    Receipt {
        /// Conversation.
        conversation_id: ConversationId,
        /// Whose cursor.
        user_id: UserId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// New position.
        seq: Seq,
    },
    /// A member started or stopped typing.
    Typing {
        /// Conversation.
        conversation_id: ConversationId,
        /// Who.
        user_id: UserId,
        /// Start or stop.
        state: TypingState,
    },
    /// A friend came online or went offline.
    Presence {
        /// Who.
        user_id: UserId,
        /// `online` or `offline`.
        status: PresenceStatus,
        /// Last time seen online, milliseconds since the Unix epoch.
        last_seen: Option<Millis>,
    },
    /// Call signalling from another user (or the server: `busy`, `cancel`).
    Call {
        /// Call id.
        call_id: String,
        /// The conversation the call belongs to.
        conversation_id: Option<ConversationId>,
        /// Caller.
        from_user_id: UserId,
        /// What the signal is.
        signal: CallSignal,
        /// Signal payload.
        payload: Value,
    },
    /// A social or membership event (`friend_request`, `member_joined`, …).
    ServerEvent(ServerEvent),
    /// Answer to [`ConnectionHandle::ping`](crate::ConnectionHandle::ping).
    Pong {
        /// The ping's nonce.
        nonce: Option<Value>,
    },
    /// An error from the server not tied to a pending send (e.g. a
    /// `bad_frame`), or a failure to refresh the session while reconnecting.
    Error(ApiError),
}

impl Event {
    /// The message, if this is a message event.
    pub fn as_message(&self) -> Option<&MessageRecord> {
        match self {
            Event::Message(m) => Some(m),
            _ => None,
        }
    }
}

impl Event {
    /// The event for a server frame that becomes one as it is (receipts,
    /// typing, presence, calls, social events, pongs); `None` for frames
    /// the connection handles itself.
    pub(crate) fn from_plain_frame(frame: ServerFrame) -> Option<Event> {
        Some(match frame {
            ServerFrame::Receipt {
                conversation_id,
                user_id,
                kind,
                seq,
            } => Event::Receipt {
                conversation_id,
                user_id,
                kind,
                seq,
            },
            ServerFrame::Typing {
                conversation_id,
                user_id,
                state,
            } => Event::Typing {
                conversation_id,
                user_id,
                state,
            },
            ServerFrame::Presence {
                user_id,
                status,
                last_seen,
            } => Event::Presence {
                user_id,
                status,
                last_seen,
            },
            ServerFrame::Call {
                call_id,
                conversation_id,
                from_user_id,
                signal,
                payload,
            } => Event::Call {
                call_id,
                conversation_id,
                from_user_id,
                signal,
                payload,
            },
            ServerFrame::Event(event) => Event::ServerEvent(event),
            ServerFrame::Pong { nonce } => Event::Pong { nonce },
            _ => return None,
        })
    }
}
