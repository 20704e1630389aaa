//! One conversation as the app keeps it ([`Chat`]), how far my messages
//! got ([`Tick`]), and uploads in progress ([`Upload`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use confab_sdk::proto::api::ConversationKind;
use confab_sdk::{Conversation, ConversationId, E2eeContent, MessageRecord, Seq, UserId};

/// How far one of my messages got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Queued, not acked yet.
    Sending,
    /// Stored by the server.
    Sent,
    /// Reached another member's device.
    Delivered,
    /// Read by another member.
    Read,
    /// Refused by the server.
    Failed,
}

impl Tick {
    /// How the tick is drawn.
    pub fn label(self) -> &'static str {
        match self {
            Tick::Sending => "sending…",
            Tick::Sent => "✓",
            Tick::Delivered => "✓✓",
            Tick::Read => "✓✓ read",
            Tick::Failed => "failed",
        }
    }
}

/// One of my messages that is not acked yet (or was refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its idempotency key.
    pub client_msg_id: String,
    /// Its text.
    pub text: String,
    /// Why the server refused it, if it did.
    pub error: Option<String>,
}

/// A conversation as the app keeps it.
#[derive(Debug, Clone)]
pub struct Chat {
    /// The server's view (title, members, muted, …).
    pub conv: Conversation,
    /// Messages loaded so far, by seq.
    pub messages: BTreeMap<Seq, MessageRecord>,
    /// My sends waiting for their ack, oldest first.
    pub pending: Vec<Pending>,
    /// Whether the newest history page was asked for.
    pub history_requested: bool,
    /// Whether a history request is in flight.
    pub loading: bool,
    /// What the last history page said about older messages (see
    /// [`Chat::has_older`]).
    pub(crate) more_before: bool,
    /// Messages from others I have not seen.
    pub unread: i64,
    /// Highest seq another member has read.
    pub read_by_others: Seq,
    /// Highest seq that reached another member's device.
    pub delivered_to_others: Seq,
    /// Who is typing, until when.
    pub typing: HashMap<UserId, Instant>,
    /// How many messages the view is scrolled up from the newest.
    pub scroll: usize,
    /// In an end-to-end encrypted conversation: what this device made of
    /// each `encrypted` message, by seq (the server's copies stay in
    /// `messages`, for seqs, receipts and order).
    pub decrypted: HashMap<Seq, E2eeContent>,
}

impl Chat {
    pub(crate) fn new(conv: Conversation, me: UserId) -> Chat {
        let read_by_others = conv
            .members
            .iter()
            .filter(|m| m.user_id != me)
            .map(|m| m.read_seq)
            .max()
            .unwrap_or(0);
        Chat {
            unread: conv.unread_count,
            read_by_others,
            delivered_to_others: read_by_others,
            conv,
            messages: BTreeMap::new(),
            pending: Vec::new(),
            history_requested: false,
            loading: false,
            more_before: true,
            typing: HashMap::new(),
            scroll: 0,
            decrypted: HashMap::new(),
        }
    }

    /// The conversation's id.
    pub fn id(&self) -> ConversationId {
        self.conv.id
    }

    /// Whether it is a direct conversation.
    pub fn is_direct(&self) -> bool {
        self.conv.kind == ConversationKind::Direct
    }

    /// The other member of a direct conversation.
    pub fn peer(&self, me: UserId) -> Option<UserId> {
        if !self.is_direct() {
            return None;
        }
        self.conv
            .members
            .iter()
            .map(|m| m.user_id)
            .find(|&u| u != me)
    }

    /// Whether messages older than the oldest loaded exist. Live messages
    /// (sync after connecting) can fill history in after a page said there
    /// was more, and seq 1 is where every conversation starts.
    pub fn has_older(&self) -> bool {
        self.more_before && self.messages.keys().next().is_none_or(|&oldest| oldest > 1)
    }

    /// The newest seq known.
    pub fn last_seq(&self) -> Seq {
        let loaded = self.messages.keys().next_back().copied().unwrap_or(0);
        loaded.max(self.conv.last_seq)
    }

    /// When something last happened here (for ordering the list).
    pub(crate) fn activity(&self) -> i64 {
        self.messages
            .values()
            .next_back()
            .map(|m| m.ts)
            .or(self.conv.last_message.as_ref().map(|m| m.ts))
            .unwrap_or(self.conv.created_at)
    }

    /// How far my message `seq` got.
    pub fn tick(&self, seq: Seq) -> Tick {
        if self.read_by_others >= seq {
            Tick::Read
        } else if self.delivered_to_others >= seq {
            Tick::Delivered
        } else {
            Tick::Sent
        }
    }
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The app's id for it.
    pub id: u64,
    /// The file name.
    pub name: String,
    /// Bytes sent.
    pub sent: u64,
    /// Total bytes (0 until known).
    pub total: u64,
}

impl Upload {
    /// Percent done, 0-100.
    pub fn percent(&self) -> u16 {
        if self.total == 0 {
            return 0;
        }
        u16::try_from(self.sent.min(self.total) * 100 / self.total).unwrap_or(100)
    }
}
