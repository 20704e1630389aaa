//! Confab storage: the [`Store`] trait and its backends.
//!
//! This is the only crate that writes SQL. The server talks to an
//! `Arc<dyn Store>` and never knows which database is behind it; one test
//! suite (`tests/store_suite.rs`) runs against every backend.
//!
//! The write path that matters for throughput is [`Store::commit_batch`]:
//! the server's group committer hands it many sends, receipts and cursor
//! moves at once, and the backend commits them in a single transaction (one
//! fsync) with per-conversation gapless `seq` allocation and `client_msg_id`
//! idempotency.

mod change_plan;
mod error;
// Before the backends: `store_impl!` is textually scoped.
#[macro_use]
mod store_impl;
mod group_plan;
// The files of `src/shared/` are compiled once inside each backend.
#[allow(clippy::duplicate_mod)]
pub mod postgres;
mod rows;
mod search;
// The files of `src/shared/` are compiled once inside each backend.
#[allow(clippy::duplicate_mod)]
pub mod sqlite;
mod types;
mod write_plan;

use std::collections::HashMap;

use async_trait::async_trait;
use confab_proto::api::{Conversation, FriendRequest, Member, User};
use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, MessageRecord, Seq, UserId};

pub use error::{Result, StoreError};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use types::*;

/// Everything Confab keeps. Implementations must be safe to share between
/// tasks; `commit_batch` is called by one committer task per node but may run
/// concurrently with other nodes' committers on a shared database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap check that the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    // --- accounts -------------------------------------------------------

    /// Creates an account. `Conflict` if the username key is taken.
    async fn create_user(&self, new: NewUser) -> Result<User>;
    /// Looks a user up by lower-cased username, with the password hash.
    async fn credentials_by_username(&self, username_key: &str) -> Result<Option<UserCredentials>>;
    /// Looks a user up by id.
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// The users among `ids` that exist, by id (unknown ids are left out).
    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>>;
    /// Users whose username starts with `prefix_key` (lower-case), by username.
    async fn search_users(&self, prefix_key: &str, limit: u32) -> Result<Vec<User>>;
    /// Changes profile fields; `None` when the user does not exist.
    async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<Option<User>>;

    /// Registers a new device (one per login).
    async fn create_device(
        &self,
        user_id: UserId,
        name: Option<String>,
        public_key: Option<String>,
        now: Millis,
    ) -> Result<DeviceId>;
    /// Stores tokens (hashes only).
    async fn insert_tokens(&self, tokens: Vec<NewToken>) -> Result<()>;
    /// Who an unexpired access token of a live device belongs to.
    async fn access_token_owner(&self, hash: &[u8], now: Millis) -> Result<Option<TokenOwner>>;
    /// Spends a refresh token atomically; a second use revokes the device.
    async fn spend_refresh_token(&self, hash: &[u8], now: Millis) -> Result<RefreshOutcome>;
    /// Revokes a device and deletes its tokens.
    async fn revoke_device(&self, device_id: DeviceId, now: Millis) -> Result<()>;
    /// Replaces the password hash and revokes every device of the user but
    /// `keep_device`, in one transaction.
    async fn change_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep_device: DeviceId,
        now: Millis,
    ) -> Result<()>;

    // --- OpenID Connect sign-in -----------------------------------------

    /// The user a provider account signs in as, if it is linked.
    async fn oidc_identity_user(&self, identity: &OidcIdentity) -> Result<Option<UserId>>;
    /// The provider accounts linked to `user`, oldest first.
    async fn oidc_identities_of(&self, user: UserId) -> Result<Vec<OidcIdentity>>;
    /// Makes an account with no usable password and links `identity` to it,
    /// in one transaction.
    async fn create_oidc_user(&self, new: NewUser, identity: OidcIdentity) -> Result<OidcSignup>;
    /// Links `identity` to an existing `user`.
    async fn link_oidc_identity(
        &self,
        user: UserId,
        identity: OidcIdentity,
        now: Millis,
    ) -> Result<OidcLink>;
    /// Keeps a single-use secret's payload until `expires_at`, under the
    /// secret's hash. Dead rows are purged first; `false` (nothing written)
    /// when `max_rows` live rows are already held.
    async fn put_oidc_pending(
        &self,
        key_hash: &[u8],
        payload: &str,
        expires_at: Millis,
        now: Millis,
        max_rows: u64,
    ) -> Result<bool>;
    /// Takes (deletes and returns) a live payload: a second take of the same
    /// key, or a take after expiry, finds nothing.
    async fn take_oidc_pending(&self, key_hash: &[u8], now: Millis) -> Result<Option<String>>;

    // --- conversations --------------------------------------------------

    /// The one direct conversation of `a` and `b`, made if missing; the
    /// returned bool says whether it was made now. An `encrypted` one (MLS)
    /// is apart from their plain one: each pair has at most one of each.
    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        encrypted: bool,
        now: Millis,
    ) -> Result<(ConversationId, bool)>;
    /// Makes a group with `owner` as owner and `members` as members,
    /// `encrypted` (MLS) or not; it stays so.
    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        encrypted: bool,
        now: Millis,
    ) -> Result<ConversationId>;
    /// A member's view of one conversation; `None` if missing or not a member.
    async fn conversation_for(
        &self,
        id: ConversationId,
        user: UserId,
    ) -> Result<Option<Conversation>>;
    /// Every conversation `user` is in, newest activity first.
    async fn conversations_for(&self, user: UserId) -> Result<Vec<Conversation>>;
    /// One member row.
    async fn member(&self, id: ConversationId, user: UserId) -> Result<Option<Member>>;
    /// Every member's user id.
    async fn member_ids(&self, id: ConversationId) -> Result<Vec<UserId>>;

    // --- messages -------------------------------------------------------

    /// Every member, by user id.
    async fn members(&self, id: ConversationId) -> Result<Vec<Member>>;
    /// Whether `user` was a member of `id` and left or was removed.
    async fn was_member(&self, id: ConversationId, user: UserId) -> Result<bool>;
    /// The members of `id` other than `user` who have no block with `user`
    /// either way: who sees `user` typing. `None` if `user` is not a member.
    async fn audience(&self, id: ConversationId, user: UserId) -> Result<Option<Vec<UserId>>>;
    /// Mutes or unmutes a conversation for one member; false if not a member.
    async fn set_muted(&self, id: ConversationId, user: UserId, muted: bool) -> Result<bool>;

    // --- end-to-end encryption (MLS delivery service) ---------------------

    /// Whether conversation `id` is encrypted; `None` if there is none.
    async fn conversation_encrypted(&self, id: ConversationId) -> Result<Option<bool>>;
    /// The public key of live device `device`, registering `key` first when
    /// it has none; `None` when the device is unknown or revoked.
    async fn pin_device_key(&self, device: DeviceId, key: &str) -> Result<Option<String>>;
    /// Which of `devices` are live devices of current members of `id`.
    async fn member_devices(
        &self,
        id: ConversationId,
        devices: &[DeviceId],
    ) -> Result<Vec<DeviceId>>;
    /// The user's devices that are not revoked, oldest first.
    async fn live_devices(&self, user: UserId) -> Result<Vec<DeviceInfo>>;
    /// Adds KeyPackages (TLS bytes) to `device`'s stock and, when given,
    /// replaces its last-resort one, in one transaction. `None` (nothing
    /// stored) when the stock would pass `max_stock`.
    async fn add_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max_stock: i64,
        now: Millis,
    ) -> Result<Option<KeyPackageStock>>;
    /// `device`'s stock.
    async fn key_package_stock(&self, device: DeviceId) -> Result<KeyPackageStock>;
    /// One KeyPackage per live device of `user` (only `devices`, when
    /// given) that has one: the oldest ordinary one, deleted, else the
    /// last-resort one, kept. Two claims never get the same ordinary one.
    async fn claim_key_packages(
        &self,
        user: UserId,
        devices: Option<&[DeviceId]>,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>>;

    // --- friends, blocks, presence ---------------------------------------

    /// Asks `to` to be friends with `from`. Crossing requests accept both.
    /// `max_pending` caps `from`'s unanswered outgoing requests.
    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        message: Option<String>,
        max_pending: u32,
        now: Millis,
    ) -> Result<FriendRequestOutcome>;
    /// Pending requests to (`incoming`) or from `user`, oldest first.
    async fn friend_requests(&self, user: UserId, incoming: bool) -> Result<Vec<FriendRequest>>;
    /// Accepts or declines request `id`, which must be addressed to `user`.
    async fn answer_friend_request(
        &self,
        id: i64,
        user: UserId,
        accept: bool,
        now: Millis,
    ) -> Result<FriendAnswer>;
    /// Withdraws `user`'s own request `id`; false if there is none.
    async fn cancel_friend_request(&self, id: i64, user: UserId) -> Result<bool>;
    /// `user`'s friends with the time they became friends, by username.
    async fn friends(&self, user: UserId) -> Result<Vec<(User, Millis)>>;
    /// `user`'s friends' ids.
    async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>>;
    /// Ends a friendship; false if there was none.
    async fn unfriend(&self, a: UserId, b: UserId) -> Result<bool>;
    /// `blocker` blocks `blocked`: ends their friendship and deletes pending
    /// requests both ways. True if a friendship ended.
    async fn block(&self, blocker: UserId, blocked: UserId, now: Millis) -> Result<bool>;
    /// Lifts a block; false if there was none.
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<bool>;
    /// Users `blocker` blocked, newest first.
    async fn blocked_users(&self, blocker: UserId) -> Result<Vec<User>>;
    /// Whether either of the two blocked the other.
    async fn blocked_either(&self, a: UserId, b: UserId) -> Result<bool>;
    /// Those of `others` with a block either way with `user`, ascending.
    async fn blocks_among(&self, user: UserId, others: &[UserId]) -> Result<Vec<UserId>>;
    /// Whether the two users are both members of some conversation now.
    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool>;
    /// Presence settings and `last_seen` of these users.
    async fn presence_records(&self, users: &[UserId]) -> Result<HashMap<UserId, PresenceRecord>>;
    /// Records when a user was last seen online.
    async fn set_last_seen(&self, user: UserId, at: Millis) -> Result<()>;

    // --- messages -------------------------------------------------------

    /// Commits a batch of writes in one transaction; one outcome per op, in
    /// order. On `Err` nothing of the batch was committed.
    async fn commit_batch(&self, ops: &[WriteOp], rules: CommitRules) -> Result<Vec<WriteOutcome>>;
    /// A page of history as `user` may see it (after their `joined_seq`),
    /// ascending; the bool says whether more lie beyond it. In groups, the
    /// caller's own messages carry `read_by`.
    async fn history(
        &self,
        id: ConversationId,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<(Vec<MessageRecord>, bool)>;
    /// For every conversation of `user` with messages past its cursor (0 when
    /// not given), the next ones in ascending order, within `limits`.
    async fn sync(
        &self,
        user: UserId,
        cursors: &HashMap<ConversationId, Seq>,
        limits: SyncLimits,
    ) -> Result<Vec<SyncBatch>>;
    /// The delivered cursor of one device.
    async fn delivered_seq(&self, device: DeviceId, id: ConversationId) -> Result<Seq>;

    // --- message changes and search --------------------------------------

    /// One message as `user` may see it (a member, the message after their
    /// `joined_seq`), in its current state; `None` otherwise.
    async fn message_for(
        &self,
        id: ConversationId,
        user: UserId,
        seq: Seq,
    ) -> Result<Option<MessageRecord>>;
    /// Full-text search over the text messages and media captions `user`
    /// can read now (current member, after their `joined_seq`; deleted
    /// messages never match), best first. The bool says whether more hits
    /// lie past this page.
    async fn search_messages(
        &self,
        user: UserId,
        query: &SearchQuery,
    ) -> Result<(Vec<SearchHit>, bool)>;
    /// How many committed message changes the background indexer has not
    /// yet put into the search index (0: search shows every commit).
    async fn search_backlog(&self) -> Result<u64>;
    /// Empties the search index and queues every searchable message for the
    /// background indexer, which rebuilds it from the messages table.
    async fn rebuild_search_index(&self) -> Result<()>;

    // --- media ----------------------------------------------------------

    /// Records an upload unless the owner's media would then take more than
    /// `quota_bytes` in all (checked atomically with the insert).
    async fn insert_media(&self, media: &MediaRecord, quota_bytes: i64) -> Result<MediaInsert>;
    /// One media record, whoever asks (access is [`Store::can_read_media`]).
    async fn media(&self, id: &str) -> Result<Option<MediaRecord>>;
    /// Bytes taken by `owner`'s uploads (what the quota counts).
    async fn media_usage(&self, owner: UserId) -> Result<i64>;
    /// Whether `user` may fetch media `id`: its uploader, or a current
    /// member of a conversation with a message referencing it that the
    /// member can see (their `joined_seq` is below the message's seq).
    async fn can_read_media(&self, id: &str, user: UserId) -> Result<bool>;
    /// Marks the media's thumbnail as stored.
    async fn set_media_thumbnail(&self, id: &str) -> Result<()>;
}
