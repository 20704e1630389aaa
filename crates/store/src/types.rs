//! Records the store takes and gives back.

use std::sync::Arc;

use confab_proto::api::{Conversation, ConversationKind, FriendRequest, Role, User};
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, DeviceId, MessageKind, MessageRecord, Seq, UserId};

/// Milliseconds since the Unix epoch. The store never reads the clock: the
/// caller passes `now`, which keeps the store deterministic under test.
pub use confab_proto::Millis;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Username as given.
    pub username: String,
    /// Lower-cased username; unique.
    pub username_key: String,
    /// Display name.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub now: Millis,
}

/// A user with the secret needed to log in.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// Public profile.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// Profile fields to change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    /// New display name.
    pub display_name: Option<String>,
    /// New avatar (`Some(None)` clears it).
    pub avatar_media_id: Option<Option<String>>,
    /// New status text (`Some(None)` clears it).
    pub status_text: Option<Option<String>>,
    /// Hide presence from friends.
    pub hide_presence: Option<bool>,
}

/// Access or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Short-lived bearer token.
    Access,
    /// One-time token that buys a new pair.
    Refresh,
}

impl TokenKind {
    pub(crate) fn code(self) -> i64 {
        match self {
            TokenKind::Access => 0,
            TokenKind::Refresh => 1,
        }
    }
}

/// A token to store (by hash only).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// Owner device.
    pub device_id: DeviceId,
    /// Access or refresh.
    pub kind: TokenKind,
    /// Expiry.
    pub expires_at: Millis,
}

/// Who a valid access token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOwner {
    /// User.
    pub user_id: UserId,
    /// Device.
    pub device_id: DeviceId,
}

/// Result of exchanging a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was fresh and is now spent; issue a new pair to this owner.
    Fresh(TokenOwner),
    /// The token had been spent before: somebody replayed it. The device has
    /// been revoked.
    Reused(TokenOwner),
    /// Unknown, expired, or its device is revoked.
    Invalid,
}

/// One write for the group committer. A batch of these is committed in one
/// transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Append a message.
    Append(NewMessage),
    /// Move a device's delivered cursor forward.
    Delivered {
        /// Device.
        device_id: DeviceId,
        /// Its user (must be a member).
        user_id: UserId,
        /// Conversation.
        conversation_id: ConversationId,
        /// Cumulative position.
        seq: Seq,
    },
    /// Move a member's read cursor forward.
    Read {
        /// Member.
        user_id: UserId,
        /// Conversation.
        conversation_id: ConversationId,
        /// Cumulative position.
        seq: Seq,
    },
    /// Change a group's membership or settings; writes `system` messages.
    Group {
        /// The change.
        change: GroupChange,
        /// Commit time for its `system` messages.
        ts: Millis,
    },
    /// Edit, delete or react to a message; writes a `system` notice.
    Message {
        /// The change.
        change: MessageChange,
        /// Commit time for the notice (and `edited_at`).
        ts: Millis,
    },
}

/// A change to a group, checked against the actor's role inside the
/// transaction that makes it.
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// Add users (owner/admin, or anyone when the group allows it). Users
    /// already in are skipped.
    Add {
        /// Group.
        conversation_id: ConversationId,
        /// Who adds.
        by: UserId,
        /// Whom.
        users: Vec<UserId>,
        /// The group may not grow past this many members.
        max_members: i64,
    },
    /// Remove `user`: leaving when `by == user`, else a kick (owner/admin,
    /// never upwards). An owner who leaves hands ownership on.
    Remove {
        /// Group.
        conversation_id: ConversationId,
        /// Who removes.
        by: UserId,
        /// Whom.
        user: UserId,
    },
    /// Change a member's role. Giving `Owner` transfers ownership (owner
    /// only; the old owner becomes admin).
    SetRole {
        /// Group.
        conversation_id: ConversationId,
        /// Who changes it.
        by: UserId,
        /// Whose role.
        user: UserId,
        /// New role.
        role: Role,
    },
    /// Change title, avatar or the add-members rule (owner/admin).
    Update {
        /// Group.
        conversation_id: ConversationId,
        /// Who changes it.
        by: UserId,
        /// New title.
        title: Option<String>,
        /// New avatar (`Some(None)` clears it).
        avatar_media_id: Option<Option<String>>,
        /// New add-members rule.
        members_can_add: Option<bool>,
    },
}

impl GroupChange {
    /// The group changed.
    pub fn conversation_id(&self) -> ConversationId {
        match self {
            GroupChange::Add {
                conversation_id, ..
            }
            | GroupChange::Remove {
                conversation_id, ..
            }
            | GroupChange::SetRole {
                conversation_id, ..
            }
            | GroupChange::Update {
                conversation_id, ..
            } => *conversation_id,
        }
    }
}

/// What a [`GroupChange`] did.
#[derive(Debug, Clone)]
pub struct GroupChangeOutcome {
    /// The `system` messages it wrote, in seq order. Each body carries an
    /// `event` name (`member_joined`, `member_left`, `role_changed`,
    /// `conversation_updated`) and that event's fields.
    pub notices: Vec<MessageRecord>,
    /// Users who are new members.
    pub added: Vec<UserId>,
    /// Members before the change.
    pub members_before: Arc<[UserId]>,
    /// Members after it.
    pub members_after: Arc<[UserId]>,
}

/// Who may send direct messages to whom (a server setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DirectMessagePolicy {
    /// Any user may message any user (unless blocked).
    #[default]
    Anyone,
    /// Only friends may message each other directly.
    FriendsOnly,
}

/// Rules the write path enforces besides membership.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitRules {
    /// Direct-message policy.
    pub direct_messages: DirectMessagePolicy,
}

/// A message to append; `seq` is assigned at commit.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Sender (must be a member).
    pub sender_id: UserId,
    /// Sender's idempotency key.
    pub client_msg_id: String,
    /// Kind.
    pub kind: MessageKind,
    /// Body as JSON text.
    pub body: String,
    /// Commit timestamp to record.
    pub ts: Millis,
    /// Users the body mentions (text messages); members among them count
    /// it in their `unread_mentions`.
    pub mentions: Vec<UserId>,
}

/// What happened to one [`WriteOp`].
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The message is committed (or was already, for a resend).
    Appended {
        /// Its seq.
        seq: Seq,
        /// Its commit time (the original one for a resend).
        ts: Millis,
        /// True when this was a resend of an already committed message.
        duplicate: bool,
        /// Every member of the conversation, to deliver to.
        members: Arc<[UserId]>,
    },
    /// A cursor moved to `seq`; `members` should hear about it.
    CursorMoved {
        /// New position (clamped to the conversation's last seq).
        seq: Seq,
        /// Every member of the conversation.
        members: Arc<[UserId]>,
        /// Direct or group (receipts fan out differently).
        kind: ConversationKind,
    },
    /// A group change was made.
    GroupChanged(GroupChangeOutcome),
    /// A message was edited, deleted or reacted to.
    MessageChanged(Box<MessageChangeOutcome>),
    /// The cursor was already at or past the position: nothing to tell.
    CursorUnchanged,
    /// Refused; nothing was written for this op.
    Rejected(ErrorCode),
}

/// Which part of a conversation's history to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryQuery {
    /// Only messages with seq below this.
    pub before_seq: Option<Seq>,
    /// Only messages with seq above this (pages forward when set).
    pub after_seq: Option<Seq>,
    /// Page size.
    pub limit: u32,
}

/// How much one sync answer may carry, so that a device far behind in many
/// conversations cannot make the server load everything at once.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// Most messages per conversation.
    pub per_conversation: u32,
    /// Most messages in the whole answer; conversations beyond it come back
    /// empty with `has_more`.
    pub total: u32,
}

/// Messages newer than a device's cursor in one conversation.
#[derive(Debug, Clone)]
pub struct SyncBatch {
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Messages in ascending seq order.
    pub messages: Vec<confab_proto::MessageRecord>,
    /// More remain after the last one.
    pub has_more: bool,
    /// Set when the cursor given was below the member's `joined_seq`: the
    /// seqs up to it are not visible to this member.
    pub floor: Option<Seq>,
}

/// A conversation as listed for one user.
pub type ConversationView = Conversation;

/// What became of a friend request.
#[derive(Debug, Clone)]
pub enum FriendRequestOutcome {
    /// Stored; waiting for the other user (also when it already was).
    Pending(FriendRequest),
    /// The other user had asked first: both are friends now. The request
    /// is theirs.
    Accepted {
        /// Their request, now answered.
        request: FriendRequest,
        /// Friends since.
        since: Millis,
    },
    /// Already friends: nothing to do.
    AlreadyFriends,
    /// One of the two blocked the other.
    Blocked,
    /// The sender has too many unanswered requests.
    TooMany,
    /// No such user.
    UnknownUser,
}

/// What became of accepting or declining a request.
#[derive(Debug, Clone)]
pub enum FriendAnswer {
    /// Now friends.
    Accepted {
        /// The request.
        request: FriendRequest,
        /// Friends since.
        since: Millis,
    },
    /// Declined and deleted.
    Declined(FriendRequest),
    /// No pending request with that id addressed to the caller.
    NotFound,
}

/// A user's presence bookkeeping in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceRecord {
    /// The user hides presence.
    pub hidden: bool,
    /// When the user was last seen online.
    pub last_seen: Option<Millis>,
}

// --- message changes and search

/// A change to one committed message, made inside the committer's
/// transaction so that it takes its place in the conversation's seq order:
/// it updates the message and appends a `system` notice naming the event.
#[derive(Debug, Clone)]
pub enum MessageChange {
    /// Replace the body (text messages) or the caption (media messages).
    /// Author only. `reply_to` and the media fields are kept from the
    /// original.
    Edit {
        /// Conversation.
        conversation_id: ConversationId,
        /// Target message.
        seq: Seq,
        /// Who edits (must be the author).
        by: UserId,
        /// New body: `{text, mentions?}` for text, `{caption?}` for media.
        body: serde_json::Value,
    },
    /// Delete for everyone: the author, or a group owner/admin. The row
    /// stays as a tombstone with body `{}`.
    Delete {
        /// Conversation.
        conversation_id: ConversationId,
        /// Target message.
        seq: Seq,
        /// Who deletes.
        by: UserId,
    },
    /// Put (`on`) or take off a reaction. One emoji per user per message:
    /// a new one replaces the old.
    React {
        /// Conversation.
        conversation_id: ConversationId,
        /// Target message.
        seq: Seq,
        /// Who reacts.
        by: UserId,
        /// The emoji (1-16 bytes, checked by the caller).
        emoji: String,
        /// On or off.
        on: bool,
    },
}

impl MessageChange {
    /// The conversation changed.
    pub fn conversation_id(&self) -> ConversationId {
        match self {
            MessageChange::Edit {
                conversation_id, ..
            }
            | MessageChange::Delete {
                conversation_id, ..
            }
            | MessageChange::React {
                conversation_id, ..
            } => *conversation_id,
        }
    }

    /// Who makes the change.
    pub fn actor(&self) -> UserId {
        match self {
            MessageChange::Edit { by, .. }
            | MessageChange::Delete { by, .. }
            | MessageChange::React { by, .. } => *by,
        }
    }
}

/// What a [`MessageChange`] did.
#[derive(Debug, Clone)]
pub struct MessageChangeOutcome {
    /// The `system` message it wrote (`message_edited`, `message_deleted`
    /// or `reaction_changed`), or `None` when nothing changed (a reaction
    /// already on, or already off; a message already deleted).
    pub notice: Option<MessageRecord>,
    /// The target message in its current state.
    pub target: MessageRecord,
    /// Every member of the conversation (they get the notice).
    pub members: Arc<[UserId]>,
    /// The members who can see the target (joined before it).
    pub viewers: Arc<[UserId]>,
}

/// A full-text search over the messages a user can read.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Words, `"quoted phrases"`, `-excluded` words (web search syntax).
    pub q: String,
    /// Only this conversation.
    pub conversation_id: Option<ConversationId>,
    /// Only this sender.
    pub sender_id: Option<UserId>,
    /// Only messages committed before this time (ms).
    pub before: Option<Millis>,
    /// Only messages committed after this time (ms).
    pub after: Option<Millis>,
    /// Page size.
    pub limit: u32,
    /// Hits to skip (the position the cursor encodes).
    pub offset: u32,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The message in its current state.
    pub message: MessageRecord,
    /// Plain text around the hits, HTML-escaped, with each hit wrapped in
    /// `<mark>`…`</mark>`.
    pub snippet: String,
}

/// Marker characters the backends put around hits; stripped from indexed
/// text so that no message can forge them.
pub(crate) const HIT_START: char = '\u{2}';
pub(crate) const HIT_END: char = '\u{3}';

/// Escapes a backend's snippet for HTML and turns its hit markers into
/// `<mark>` tags.
pub(crate) fn render_snippet(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            HIT_START => out.push_str("<mark>"),
            HIT_END => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// --- media ----------------------------------------------------------------

/// What an uploaded media item is used as (defined with the wire types, so
/// the media parsers can name it without the store).
pub use confab_proto::MediaKind;

/// One uploaded media item's record (the bytes are in the blob store under
/// `sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    /// Random, url-safe id.
    pub id: String,
    /// Uploader.
    pub owner_id: UserId,
    /// Lower-case hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// Content type, as sniffed.
    pub mime: String,
    /// Image, voice or file.
    pub kind: MediaKind,
    /// Pixels (images).
    pub width: Option<i64>,
    /// Pixels (images).
    pub height: Option<i64>,
    /// Length (voice, when the container tells).
    pub duration_ms: Option<i64>,
    /// Whether the thumbnail is stored (images).
    pub thumbnail: bool,
    /// Upload time.
    pub created_at: Millis,
}

/// What became of [`crate::Store::insert_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaInsert {
    /// Stored.
    Stored,
    /// The owner's uploads would exceed the quota; nothing stored.
    OverQuota {
        /// Bytes the owner's media already take.
        used: i64,
    },
}

/// A provider account: who an OpenID Connect provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The provider's issuer URL (the ID token's `iss`).
    pub issuer: String,
    /// The provider's id for the account (the ID token's `sub`).
    pub subject: String,
}

/// What [`crate::Store::create_oidc_user`] did.
#[derive(Debug, Clone)]
pub enum OidcSignup {
    /// The account was made and the identity linked to it.
    Created(User),
    /// The username key is taken; nothing was written.
    UsernameTaken,
    /// The identity already belongs to a user; nothing was written.
    IdentityTaken(UserId),
}

/// What [`crate::Store::link_oidc_identity`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcLink {
    /// The identity is now linked to the user.
    Linked,
    /// It already was.
    AlreadyLinked,
    /// It belongs to another user; nothing was written.
    TakenBy(UserId),
}
