//! What the app asks the runner to do ([`Command`]) and what comes back
//! ([`AppEvent`]): the only two ways the sans-IO [`App`](super::App) talks
//! to the outside.

use std::path::PathBuf;
use std::time::Instant;

use confab_sdk::proto::api::{Friend, FriendRequest};
use confab_sdk::{
    Ack, Conversation, ConversationId, E2eeMessage, Event, MessagePage, MessageRecord, Seq,
    TypingState, User, UserId,
};

/// Work for the runner: network calls, the bell, quitting.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Fetch my conversations ([`AppEvent::Conversations`]).
    LoadConversations,
    /// Fetch a history page: the newest one, or the one before `before`
    /// ([`AppEvent::History`]).
    LoadHistory {
        /// Conversation.
        conversation_id: ConversationId,
        /// Page before this seq; `None` for the newest page.
        before: Option<Seq>,
    },
    /// Fetch one message as it is now, after an edit or a reaction
    /// ([`AppEvent::Messages`]).
    RefreshMessage {
        /// Conversation.
        conversation_id: ConversationId,
        /// The message.
        seq: Seq,
    },
    /// Fetch a user's profile ([`AppEvent::User`]).
    LoadUser(UserId),
    /// Fetch my friends with presence ([`AppEvent::Friends`]).
    LoadFriends,
    /// Fetch incoming friend requests ([`AppEvent::FriendRequests`]).
    LoadFriendRequests,
    /// Queue a text message on the connection ([`AppEvent::Acked`]).
    SendText {
        /// Conversation.
        conversation_id: ConversationId,
        /// Idempotency key, also how the app finds its pending line.
        client_msg_id: String,
        /// The text.
        text: String,
    },
    /// Tell the conversation I started or stopped typing.
    Typing {
        /// Conversation.
        conversation_id: ConversationId,
        /// Start or stop.
        state: TypingState,
    },
    /// Move my read cursor.
    MarkRead {
        /// Conversation.
        conversation_id: ConversationId,
        /// Read up to here.
        seq: Seq,
    },
    /// Find a user by exact username and open the direct chat with them
    /// ([`AppEvent::Opened`]).
    OpenDirect {
        /// Username.
        username: String,
        /// The end-to-end encrypted direct chat (made with its MLS group
        /// if new), not the plain one.
        encrypted: bool,
        /// Echoed in [`AppEvent::Opened`].
        ticket: u64,
    },
    /// Create a group with these members ([`AppEvent::Opened`]).
    CreateGroup {
        /// Title.
        title: String,
        /// Members' usernames.
        usernames: Vec<String>,
        /// End-to-end encrypted: every member device is added to its MLS
        /// group at once.
        encrypted: bool,
        /// Echoed in [`AppEvent::Opened`].
        ticket: u64,
    },
    /// Add a user to a group ([`AppEvent::Notice`]).
    AddMember {
        /// Group.
        conversation_id: ConversationId,
        /// Username.
        username: String,
        /// The group is end-to-end encrypted: all the user's devices join
        /// its MLS group in one commit.
        encrypted: bool,
    },
    /// Remove a user from a group ([`AppEvent::Notice`]).
    RemoveMember {
        /// Group.
        conversation_id: ConversationId,
        /// Username.
        username: String,
        /// The group is end-to-end encrypted: the user's devices leave its
        /// MLS group (one commit) before the membership goes.
        encrypted: bool,
    },
    /// Leave a group ([`AppEvent::Left`]).
    Leave(ConversationId),
    /// Mute or unmute a conversation ([`AppEvent::ConversationChanged`]).
    SetMuted {
        /// Conversation.
        conversation_id: ConversationId,
        /// Muted or not.
        muted: bool,
    },
    /// Ask a user (by username) to be friends ([`AppEvent::Notice`]).
    SendFriendRequest {
        /// Username.
        username: String,
    },
    /// Accept friend request `id` ([`AppEvent::Notice`]).
    AcceptFriendRequest(i64),
    /// Decline friend request `id` ([`AppEvent::Notice`]).
    DeclineFriendRequest(i64),
    /// Upload a file resumably, reporting [`AppEvent::UploadProgress`],
    /// then send it as a `file` (or `image`) message ([`AppEvent::UploadDone`]).
    SendFile {
        /// Which upload (the app's own counter).
        upload_id: u64,
        /// Conversation.
        conversation_id: ConversationId,
        /// The file.
        path: PathBuf,
    },
    /// Encrypt a text message for an end-to-end encrypted conversation and
    /// send it ([`AppEvent::Acked`], then [`AppEvent::Decrypted`]).
    SendEncrypted {
        /// Conversation.
        conversation_id: ConversationId,
        /// Idempotency key, also how the app finds its pending line.
        client_msg_id: String,
        /// The text.
        text: String,
    },
    /// Encrypt a file with a fresh key, upload the ciphertext and send the
    /// key inside an MLS message ([`AppEvent::UploadDone`]).
    SendEncryptedFile {
        /// Which upload (the app's own counter).
        upload_id: u64,
        /// Conversation.
        conversation_id: ConversationId,
        /// The file.
        path: PathBuf,
    },
    /// Read an encrypted conversation's new messages in seq order (applying
    /// commits, decrypting the rest) and answer what this device made of
    /// every message from `from` on ([`AppEvent::Decrypted`]).
    Decrypt {
        /// Conversation.
        conversation_id: ConversationId,
        /// The first seq the app wants to know about.
        from: Seq,
    },
    /// Ring the terminal bell.
    Bell,
    /// Leave the app.
    Quit,
}

/// Something that happened outside the app: SDK events, answers to
/// [`Command`]s, time passing.
#[derive(Debug, Clone)]
pub enum AppEvent {
    /// An event from the SDK connection.
    Sdk(Event),
    /// Time passed (typing timeouts); carries the current instant.
    Tick(Instant),
    /// My conversations.
    Conversations(Vec<Conversation>),
    /// A history page.
    History {
        /// Conversation.
        conversation_id: ConversationId,
        /// The page.
        page: MessagePage,
    },
    /// A user's profile.
    User(User),
    /// My friends.
    Friends(Vec<Friend>),
    /// Incoming friend requests.
    FriendRequests(Vec<FriendRequest>),
    /// A conversation to show, and to select if its ticket is the latest
    /// `/dm` or `/group` (after `/dm` or `/group`).
    Opened(Conversation, u64),
    /// A conversation changed (e.g. muted).
    ConversationChanged(Conversation),
    /// I left a conversation.
    Left(ConversationId),
    /// The server stored a message I sent, or refused it (`Err` carries why).
    Acked {
        /// The message's idempotency key.
        client_msg_id: String,
        /// The ack, or the error text.
        result: Result<Ack, String>,
    },
    /// Bytes of an upload sent so far.
    UploadProgress {
        /// Which upload.
        upload_id: u64,
        /// Bytes sent.
        sent: u64,
        /// Total bytes.
        total: u64,
    },
    /// An upload finished and its message was queued, or it failed.
    UploadDone {
        /// Which upload.
        upload_id: u64,
        /// The media message as stored (from its ack), or the error text.
        result: Result<MessageRecord, String>,
    },
    /// Messages as they are now (replacing the loaded copies).
    Messages(Vec<MessageRecord>),
    /// What this device made of an encrypted conversation's messages.
    Decrypted {
        /// Conversation.
        conversation_id: ConversationId,
        /// By seq: plaintexts, key changes, or why one cannot be read.
        messages: Vec<E2eeMessage>,
    },
    /// A line for the status bar (results of actions, errors).
    Notice(String),
}
