//! The PostgreSQL backend, for running several Confab nodes on one shared
//! database.
//!
//! Same schema and semantics as the SQLite backend (one behavioural suite,
//! `tests/store_suite.rs`, runs against both); what differs is how writes
//! stay correct when they are not serialised by a single connection:
//!
//! - [`Store::commit_batch`] (`commit.rs`) first locks the rows of the
//!   conversations its batch touches, in id order, so that membership,
//!   idempotency and seq reservation of two nodes' batches for the same
//!   conversation never interleave; seqs stay gapless per conversation.
//! - `get_or_create_direct` inserts with `ON CONFLICT (direct_key) DO
//!   NOTHING` and reads back the winner's row.
//! - Friend, block and refresh-token operations that read before they write
//!   lock the rows they decide on (`social.rs`, `accounts.rs`).
//!
//! Every statement is built at run time (no `query!` macros): building the
//! crate needs no database. Migrations (`migrations/postgres`) are embedded
//! and run by [`PostgresStore::open`]. A commit returns only once the server
//! has made it durable (PostgreSQL's default `synchronous_commit=on`).

mod accounts;
mod changes;
mod commit;
mod conversations;
mod e2ee;
mod groups;
mod media;
mod oidc;
mod rows;
mod search;
mod social;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use confab_proto::api::{Conversation, FriendRequest, Member, User};
use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, MessageRecord, Seq, UserId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::types::*;
use crate::{Result, Store, StoreError};

/// Connections per pool (per node).
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a free connection before it reports the
/// database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Confab's shared store: a pool of connections to one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    indexer: std::sync::Arc<crate::search::Indexer>,
    index: search::PostgresIndex,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with a pool
    /// of 16 connections and a 10 s acquire timeout, and runs migrations.
    /// Several nodes may open the same database at once (the migrator takes
    /// an advisory lock).
    pub async fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::open_with(url, MAX_CONNECTIONS, ACQUIRE_TIMEOUT).await
    }

    /// [`PostgresStore::open`] with another pool size and acquire timeout.
    /// While the database is unreachable, every call waits up to
    /// `acquire_timeout` for a connection and then fails with
    /// [`StoreError::Unavailable`].
    pub async fn open_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<PostgresStore> {
        // The locking in this backend is written for READ COMMITTED (a fresh
        // snapshot per statement), whatever the server's default; and a node
        // that stops talking in the middle of a transaction must not hold
        // conversation locks for long.
        let connect = PgConnectOptions::from_str(url)?.options([
            ("default_transaction_isolation", "read\\ committed"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        tokio::task::spawn_blocking(crate::search::text::warm_up)
            .await
            .map_err(|e| StoreError::Unavailable(format!("loading the dictionary failed: {e}")))?;
        let index = search::PostgresIndex { pool: pool.clone() };
        let indexer = std::sync::Arc::new(crate::search::Indexer::start(index.clone()));
        Ok(PostgresStore {
            pool,
            indexer,
            index,
        })
    }

    /// Closes the pool, waiting for calls in flight.
    pub async fn close(&self) {
        self.indexer.stop();
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        accounts::create_user(&self.pool, new).await
    }

    async fn oidc_identity_user(&self, identity: &OidcIdentity) -> Result<Option<UserId>> {
        oidc::identity_user(&self.pool, identity).await
    }

    async fn oidc_identities_of(&self, user: UserId) -> Result<Vec<OidcIdentity>> {
        oidc::identities_of(&self.pool, user).await
    }

    async fn create_oidc_user(&self, new: NewUser, identity: OidcIdentity) -> Result<OidcSignup> {
        oidc::create_user(&self.pool, new, identity).await
    }

    async fn link_oidc_identity(
        &self,
        user: UserId,
        identity: OidcIdentity,
        now: Millis,
    ) -> Result<OidcLink> {
        oidc::link(&self.pool, user, identity, now).await
    }

    async fn put_oidc_pending(
        &self,
        key_hash: &[u8],
        payload: &str,
        expires_at: Millis,
        now: Millis,
        max_rows: u64,
    ) -> Result<bool> {
        oidc::put_pending(&self.pool, key_hash, payload, expires_at, now, max_rows).await
    }

    async fn take_oidc_pending(&self, key_hash: &[u8], now: Millis) -> Result<Option<String>> {
        oidc::take_pending(&self.pool, key_hash, now).await
    }

    async fn credentials_by_username(&self, key: &str) -> Result<Option<UserCredentials>> {
        accounts::credentials_by_username(&self.pool, key).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        accounts::user(&self.pool, id).await
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>> {
        accounts::users(&self.pool, ids).await
    }

    async fn search_users(&self, prefix_key: &str, limit: u32) -> Result<Vec<User>> {
        accounts::search_users(&self.pool, prefix_key, limit).await
    }

    async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<Option<User>> {
        accounts::update_profile(&self.pool, id, update).await
    }

    async fn create_device(
        &self,
        user_id: UserId,
        name: Option<String>,
        public_key: Option<String>,
        now: Millis,
    ) -> Result<DeviceId> {
        accounts::create_device(&self.pool, user_id, name, public_key, now).await
    }

    async fn insert_tokens(&self, tokens: Vec<NewToken>) -> Result<()> {
        accounts::insert_tokens(&self.pool, tokens).await
    }

    async fn access_token_owner(&self, hash: &[u8], now: Millis) -> Result<Option<TokenOwner>> {
        accounts::access_token_owner(&self.pool, hash, now).await
    }

    async fn spend_refresh_token(&self, hash: &[u8], now: Millis) -> Result<RefreshOutcome> {
        accounts::spend_refresh_token(&self.pool, hash, now).await
    }

    async fn revoke_device(&self, device_id: DeviceId, now: Millis) -> Result<()> {
        accounts::revoke_device(&self.pool, device_id, now).await
    }

    async fn change_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep_device: DeviceId,
        now: Millis,
    ) -> Result<()> {
        accounts::change_password(&self.pool, user, password_hash, keep_device, now).await
    }

    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        encrypted: bool,
        now: Millis,
    ) -> Result<(ConversationId, bool)> {
        conversations::get_or_create_direct(&self.pool, a, b, encrypted, now).await
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        encrypted: bool,
        now: Millis,
    ) -> Result<ConversationId> {
        conversations::create_group(&self.pool, owner, title, members, encrypted, now).await
    }

    async fn conversation_for(
        &self,
        id: ConversationId,
        user: UserId,
    ) -> Result<Option<Conversation>> {
        conversations::conversation_for(&self.pool, id, user).await
    }

    async fn conversations_for(&self, user: UserId) -> Result<Vec<Conversation>> {
        conversations::conversations_for(&self.pool, user).await
    }

    async fn member(&self, id: ConversationId, user: UserId) -> Result<Option<Member>> {
        conversations::member(&self.pool, id, user).await
    }

    async fn member_ids(&self, id: ConversationId) -> Result<Vec<UserId>> {
        conversations::member_ids(&self.pool, id).await
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>> {
        conversations::members(&self.pool, id).await
    }

    async fn was_member(&self, id: ConversationId, user: UserId) -> Result<bool> {
        conversations::was_member(&self.pool, id, user).await
    }

    async fn audience(&self, id: ConversationId, user: UserId) -> Result<Option<Vec<UserId>>> {
        conversations::audience(&self.pool, id, user).await
    }

    async fn set_muted(&self, id: ConversationId, user: UserId, muted: bool) -> Result<bool> {
        conversations::set_muted(&self.pool, id, user, muted).await
    }

    async fn conversation_encrypted(&self, id: ConversationId) -> Result<Option<bool>> {
        e2ee::conversation_encrypted(&self.pool, id).await
    }

    async fn pin_device_key(&self, device: DeviceId, key: &str) -> Result<Option<String>> {
        e2ee::pin_device_key(&self.pool, device, key).await
    }

    async fn member_devices(
        &self,
        id: ConversationId,
        devices: &[DeviceId],
    ) -> Result<Vec<DeviceId>> {
        e2ee::member_devices(&self.pool, id, devices).await
    }

    async fn live_devices(&self, user: UserId) -> Result<Vec<DeviceInfo>> {
        e2ee::live_devices(&self.pool, user).await
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max_stock: i64,
        now: Millis,
    ) -> Result<Option<KeyPackageStock>> {
        e2ee::add_key_packages(&self.pool, device, packages, last_resort, max_stock, now).await
    }

    async fn key_package_stock(&self, device: DeviceId) -> Result<KeyPackageStock> {
        e2ee::key_package_stock(&self.pool, device).await
    }

    async fn claim_key_packages(
        &self,
        user: UserId,
        devices: Option<&[DeviceId]>,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>> {
        e2ee::claim_key_packages(&self.pool, user, devices).await
    }

    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        message: Option<String>,
        max_pending: u32,
        now: Millis,
    ) -> Result<FriendRequestOutcome> {
        social::send_friend_request(&self.pool, from, to, message, max_pending, now).await
    }

    async fn friend_requests(&self, user: UserId, incoming: bool) -> Result<Vec<FriendRequest>> {
        social::friend_requests(&self.pool, user, incoming).await
    }

    async fn answer_friend_request(
        &self,
        id: i64,
        user: UserId,
        accept: bool,
        now: Millis,
    ) -> Result<FriendAnswer> {
        social::answer_friend_request(&self.pool, id, user, accept, now).await
    }

    async fn cancel_friend_request(&self, id: i64, user: UserId) -> Result<bool> {
        social::cancel_friend_request(&self.pool, id, user).await
    }

    async fn friends(&self, user: UserId) -> Result<Vec<(User, Millis)>> {
        social::friends(&self.pool, user).await
    }

    async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>> {
        social::friend_ids(&self.pool, user).await
    }

    async fn unfriend(&self, a: UserId, b: UserId) -> Result<bool> {
        social::unfriend(&self.pool, a, b).await
    }

    async fn block(&self, blocker: UserId, blocked: UserId, now: Millis) -> Result<bool> {
        social::block(&self.pool, blocker, blocked, now).await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<bool> {
        social::unblock(&self.pool, blocker, blocked).await
    }

    async fn blocked_users(&self, blocker: UserId) -> Result<Vec<User>> {
        social::blocked_users(&self.pool, blocker).await
    }

    async fn blocked_either(&self, a: UserId, b: UserId) -> Result<bool> {
        social::blocked_either(&self.pool, a, b).await
    }

    async fn blocks_among(&self, user: UserId, others: &[UserId]) -> Result<Vec<UserId>> {
        social::blocks_among(&self.pool, user, others).await
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        social::share_conversation(&self.pool, a, b).await
    }

    async fn presence_records(&self, users: &[UserId]) -> Result<HashMap<UserId, PresenceRecord>> {
        social::presence_records(&self.pool, users).await
    }

    async fn set_last_seen(&self, user: UserId, at: Millis) -> Result<()> {
        social::set_last_seen(&self.pool, user, at).await
    }

    async fn commit_batch(&self, ops: &[WriteOp], rules: CommitRules) -> Result<Vec<WriteOutcome>> {
        let out = commit::commit_batch(&self.pool, ops, rules).await?;
        self.indexer.wake();
        Ok(out)
    }

    async fn history(
        &self,
        id: ConversationId,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<(Vec<MessageRecord>, bool)> {
        conversations::history(&self.pool, id, user, query).await
    }

    async fn sync(
        &self,
        user: UserId,
        cursors: &HashMap<ConversationId, Seq>,
        limits: SyncLimits,
    ) -> Result<Vec<SyncBatch>> {
        conversations::sync(&self.pool, user, cursors, limits).await
    }

    async fn delivered_seq(&self, device: DeviceId, id: ConversationId) -> Result<Seq> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT delivered_seq FROM device_cursors WHERE device_id = $1 AND conversation_id = $2",
        )
        .bind(device)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq.unwrap_or(0))
    }

    // --- message changes and search

    async fn message_for(
        &self,
        id: ConversationId,
        user: UserId,
        seq: Seq,
    ) -> Result<Option<MessageRecord>> {
        changes::message_for(&self.pool, id, user, seq).await
    }

    async fn search_messages(
        &self,
        user: UserId,
        query: &SearchQuery,
    ) -> Result<(Vec<SearchHit>, bool)> {
        crate::search::wait_for_index(&self.indexer, &self.index, crate::search::SEARCH_WAIT)
            .await?;
        search::search(&self.pool, user, query).await
    }

    async fn search_backlog(&self) -> Result<u64> {
        search::backlog(&self.pool).await
    }

    async fn rebuild_search_index(&self) -> Result<()> {
        search::rebuild(&self.pool).await?;
        self.indexer.wake();
        Ok(())
    }

    // --- media ----------------------------------------------------------

    async fn insert_media(&self, m: &MediaRecord, quota_bytes: i64) -> Result<MediaInsert> {
        media::insert_media(&self.pool, m, quota_bytes).await
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>> {
        media::media(&self.pool, id).await
    }

    async fn media_usage(&self, owner: UserId) -> Result<i64> {
        media::media_usage(&self.pool, owner).await
    }

    async fn can_read_media(&self, id: &str, user: UserId) -> Result<bool> {
        media::can_read_media(&self.pool, id, user).await
    }

    async fn set_media_thumbnail(&self, id: &str) -> Result<()> {
        media::set_media_thumbnail(&self.pool, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_use_read_committed_and_bound_idle_transactions() {
        let Some(pg) = confab_testkit::Postgres::start_or_skip().await else {
            return;
        };
        // Even where the server defaults to SERIALIZABLE.
        let url = pg.url();
        let admin = PgPool::connect(&url).await.expect("connect");
        sqlx::query("ALTER DATABASE confab SET default_transaction_isolation = 'serializable'")
            .execute(&admin)
            .await
            .expect("alter");
        admin.close().await;
        let store = PostgresStore::open(&url).await.expect("open");
        let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&store.pool)
            .await
            .expect("show");
        assert_eq!(isolation, "read committed");
        let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&store.pool)
            .await
            .expect("show");
        assert_eq!(idle, "1min");
        store.ping().await.expect("ping");
        store.close().await;
    }
}
