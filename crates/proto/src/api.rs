//! HTTP API request and response bodies (`/v1`, JSON).

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, DeviceId, Millis, Seq, UserId};
use crate::message::{MessageKind, MessageRecord};

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique (case-insensitively) login name.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Avatar image, if set.
    #[serde(default)]
    pub avatar_media_id: Option<String>,
    /// Short status line.
    #[serde(default)]
    pub status_text: Option<String>,
    /// Account creation time.
    pub created_at: Millis,
    /// Only in the owner's own profile (`/v1/users/me`): whether presence is
    /// hidden from friends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_presence: Option<bool>,
}

/// `POST /v1/auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Wanted username.
    pub username: String,
    /// Password (at least 8 characters).
    pub password: String,
    /// Name shown to others; defaults to the username.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Answer to `POST /v1/auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The new account.
    pub user: User,
}

/// `POST /v1/auth/login`: creates a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Username (any case).
    pub username: String,
    /// Password.
    pub password: String,
    /// Name for the new device.
    #[serde(default)]
    pub device_name: Option<String>,
    /// The device's Ed25519 public key (base64), if it has one.
    #[serde(default)]
    pub device_public_key: Option<String>,
}

/// Answer to login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Bearer token for the API and the WebSocket.
    pub access_token: String,
    /// One-time token that buys the next pair.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The account.
    pub user: User,
    /// The device these tokens belong to.
    pub device_id: DeviceId,
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

/// `POST /v1/auth/password`: every other device of the user is logged out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangePasswordRequest {
    /// The password now.
    pub current_password: String,
    /// The new one (at least 8 characters).
    pub new_password: String,
}

/// `PATCH /v1/users/me`: fields left out stay as they are; `null` clears
/// the optional ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateProfileRequest {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// New avatar (`null` clears it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub avatar_media_id: Option<Option<String>>,
    /// New status text (`null` clears it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub status_text: Option<Option<String>>,
    /// Hide my presence from friends (they see me offline, no `last_seen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_presence: Option<bool>,
}

/// `GET /v1/users?q=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    /// Matching users, by username.
    pub users: Vec<User>,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreateConversationRequest {
    /// Get or create the one direct conversation with `user_id`.
    Direct {
        /// The other user.
        user_id: UserId,
        /// End-to-end encrypted (MLS): a conversation of its own, apart
        /// from the plain one with the same user.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypted: bool,
    },
    /// Create a group; the caller becomes its owner.
    Group {
        /// Group title.
        title: String,
        /// Initial members besides the caller.
        #[serde(default)]
        member_ids: Vec<UserId>,
        /// End-to-end encrypted (MLS); it stays so.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypted: bool,
    },
}

/// Direct or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two users, one conversation per pair.
    Direct,
    /// Any number of members with roles.
    Group,
}

/// A member's role in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the group (or was handed it).
    Owner,
    /// May manage members and settings.
    Admin,
    /// Plain member.
    Member,
}

/// A member of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user_id: UserId,
    /// Role.
    pub role: Role,
    /// The conversation's last seq when the member joined; they see history
    /// after it.
    pub joined_seq: Seq,
    /// Read cursor.
    pub read_seq: Seq,
}

/// A conversation as listed for the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Group title (none for direct conversations).
    #[serde(default)]
    pub title: Option<String>,
    /// Group avatar.
    #[serde(default)]
    pub avatar_media_id: Option<String>,
    /// Groups: whether plain members may add members (else owner and admins).
    #[serde(default)]
    pub members_can_add: bool,
    /// Members, by user id. Large groups list only the first
    /// [`MEMBERS_INLINE_MAX`]; `GET /v1/conversations/{id}/members` has all.
    pub members: Vec<Member>,
    /// How many members there are.
    #[serde(default)]
    pub member_count: i64,
    /// Highest committed seq.
    pub last_seq: Seq,
    /// The newest message the caller can see.
    #[serde(default)]
    pub last_message: Option<MessageRecord>,
    /// The caller's read cursor.
    pub read_seq: Seq,
    /// Messages from others after the read cursor.
    pub unread_count: i64,
    /// Unread messages that mention the caller.
    #[serde(default)]
    pub unread_mentions: i64,
    /// The caller muted it: messages still arrive, clients do not notify.
    #[serde(default)]
    pub muted: bool,
    /// Creation time.
    pub created_at: Millis,
    /// End-to-end encrypted (MLS): only `encrypted` messages are accepted.
    #[serde(default)]
    pub encrypted: bool,
    /// Encrypted conversations: the MLS epoch the next commit must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mls_epoch: Option<u64>,
}

/// A conversation view lists at most this many members inline.
pub const MEMBERS_INLINE_MAX: usize = 256;

/// `PATCH /v1/conversations/{id}`: fields left out stay. `muted` is the
/// caller's own setting; the others change the group for everyone (owner
/// and admins only) and are announced as `conversation_updated`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateConversationRequest {
    /// New group title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New group avatar (`null` clears it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub avatar_media_id: Option<Option<String>>,
    /// Whether plain members may add members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_can_add: Option<bool>,
    /// Mute (or unmute) for me.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted: Option<bool>,
}

/// `POST /v1/conversations/{id}/members`: `user_id` or `user_ids` (or both).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AddMembersRequest {
    /// One user to add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Several users to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<UserId>,
}

/// `PATCH /v1/conversations/{id}/members/{user_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateMemberRequest {
    /// New role; `owner` hands ownership over (the old owner becomes admin).
    pub role: Role,
}

/// `GET /v1/conversations/{id}/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberList {
    /// Every member, by user id.
    pub members: Vec<Member>,
}

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one device is connected.
    Online,
    /// No device is connected (or presence is hidden).
    Offline,
}

impl PresenceStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Offline => "offline",
        }
    }
}

/// `POST /v1/friends/requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FriendRequestCreate {
    /// Whom to ask.
    pub user_id: UserId,
    /// Optional note to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A pending friend request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRequest {
    /// Id (for accept and decline).
    pub id: i64,
    /// Who asked.
    pub from_user: User,
    /// Who was asked.
    pub to_user: User,
    /// The note, if any.
    #[serde(default)]
    pub message: Option<String>,
    /// When.
    pub created_at: Millis,
}

/// `GET /v1/friends/requests?direction=incoming|outgoing`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FriendRequestList {
    /// Oldest first.
    pub requests: Vec<FriendRequest>,
}

/// What became of `POST /v1/friends/requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FriendRequestState {
    /// Waiting for the other user.
    Pending,
    /// The other user had already asked: now friends.
    Accepted,
}

/// Answer to `POST /v1/friends/requests` (and to accept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FriendRequestResult {
    /// Pending or accepted.
    pub status: FriendRequestState,
    /// The pending request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<FriendRequest>,
    /// The new friend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friend: Option<Friend>,
}

/// A friend, with presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Friend {
    /// Profile.
    pub user: User,
    /// Friends since.
    pub since: Millis,
    /// Online or offline (offline when they hide presence).
    pub status: PresenceStatus,
    /// Last time seen online (none when online, never seen, or hidden).
    #[serde(default)]
    pub last_seen: Option<Millis>,
}

/// `GET /v1/friends`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FriendList {
    /// By username.
    pub friends: Vec<Friend>,
}

/// `GET /v1/blocks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockList {
    /// Users I blocked, newest first.
    pub users: Vec<User>,
}

/// `GET /v1/conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationList {
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
}

/// `GET /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    /// Messages in ascending seq order.
    pub messages: Vec<MessageRecord>,
    /// True when more messages lie beyond this page in the direction paged
    /// (for an `around_seq` page: after it).
    pub has_more: bool,
    /// `around_seq` pages only: whether more messages lie before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more_before: Option<bool>,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMessageRequest {
    /// Idempotency key.
    pub client_msg_id: String,
    /// Kind.
    pub kind: MessageKind,
    /// Body.
    pub body: serde_json::Value,
}

/// Answer to an HTTP send: the same fields as the WebSocket `ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// Idempotency key.
    pub client_msg_id: String,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Assigned seq.
    pub seq: Seq,
    /// Commit time.
    pub ts: Millis,
}

/// `POST /v1/conversations/{id}/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    /// Read up to here.
    pub seq: Seq,
}

/// `GET /healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `ok` or what is wrong.
    pub status: String,
}

mod double_option {
    //! `Option<Option<T>>`: absent = leave alone, `null` = clear.
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

// --- message changes and search

/// `PATCH /v1/conversations/{id}/messages/{seq}`: `{"body": {"text": …}}`
/// for a text message (`mentions` may change, `reply_to` is kept), or
/// `{"body": {"caption": …}}` for a media message (absent/null removes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditMessageRequest {
    /// The new body.
    pub body: serde_json::Value,
}

/// One hit of `GET /v1/search/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    /// The message in its current state.
    pub message: MessageRecord,
    /// Plain text around the hits, HTML-escaped, each hit wrapped in
    /// `<mark>`…`</mark>`.
    pub snippet: String,
}

/// `GET /v1/search/messages`: hits, best first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResults {
    /// This page of hits.
    pub hits: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_conversation_shapes() {
        let d: CreateConversationRequest =
            serde_json::from_str(r#"{"kind":"direct","user_id":4}"#).expect("direct");
        assert!(matches!(
            d,
            CreateConversationRequest::Direct {
                user_id: 4,
                encrypted: false
            }
        ));
        let g: CreateConversationRequest =
            serde_json::from_str(r#"{"kind":"group","title":"t","member_ids":[2,3]}"#)
                .expect("group");
        assert!(matches!(g, CreateConversationRequest::Group { .. }));
    }

    #[test]
    fn patch_profile_distinguishes_null_from_absent() {
        let p: UpdateProfileRequest =
            serde_json::from_str(r#"{"status_text":null}"#).expect("patch");
        assert_eq!(p.status_text, Some(None));
        assert_eq!(p.avatar_media_id, None);
        assert_eq!(p.display_name, None);
    }
}

/// `GET /v1/calls/ice-servers`: what a calling client passes to
/// `RTCPeerConnection` as `iceServers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServers {
    /// STUN and TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the TURN credentials last; fetch new ones before then.
    pub ttl_s: u64,
}

/// One entry of [`IceServers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`/`turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name: `<expiry unix time>:<user_id>` (none for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password: base64(HMAC-SHA1(secret, username)) (none for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
