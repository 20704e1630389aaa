//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so a
//! commit is on disk before it returns. The committer's batches and the
//! search indexer's rounds run on a dedicated writer thread that owns a
//! rusqlite connection (`writer.rs`, `batch.rs`): one job, one
//! transaction, one fsync per batch, no async round trip per statement.
//! The other writes (accounts, friends, media records, creating
//! conversations) still go through one sqlx writer connection; every write
//! transaction begins `IMMEDIATE`, so the two writers queue on SQLite's
//! lock instead of failing. Reads use a small pool of read-only sqlx
//! connections concurrently with the writers.

mod accounts;
mod batch;
mod batch_changes;
pub(crate) mod changes;
mod conversations;
mod e2ee;
mod groups;
mod media;
mod oidc;
mod rows;
pub(crate) mod search;
mod social;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use confab_proto::api::{Conversation, FriendRequest, Member, User};
use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, MessageRecord, Seq, UserId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::types::*;
use crate::{Result, Store, StoreError};

/// How often the background task checkpoints the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Confab's embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    checkpointer: Arc<Checkpointer>,
    indexer: Arc<crate::search::Indexer>,
    index: search::SqliteIndex,
    /// The writer thread: sends and cursor moves, indexing rounds.
    rw: writer::Writer,
}

/// Copies the WAL back into the database file off the commit path. SQLite's
/// automatic checkpoint would run inside a commit every 1000 pages and stall
/// the group committer for the length of a checkpoint and its fsync.
#[derive(Debug)]
struct Checkpointer {
    pool: SqlitePool,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(pool: SqlitePool) -> Checkpointer {
        let p = pool.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&p)
                    .await
                {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
        });
        Checkpointer { pool, task }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000")
            .pragma("wal_autocheckpoint", "0");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let checkpoint_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        let checkpointer = Arc::new(Checkpointer::start(checkpoint_pool));
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        tokio::task::spawn_blocking(crate::search::text::warm_up)
            .await
            .map_err(|e| StoreError::Unavailable(format!("loading the dictionary failed: {e}")))?;
        let rw = writer::Writer::start(path)?;
        let index = search::SqliteIndex {
            reader: reader.clone(),
            writer: rw.clone(),
        };
        let indexer = Arc::new(crate::search::Indexer::start(index.clone()));
        Ok(SqliteStore {
            writer,
            reader,
            checkpointer,
            indexer,
            index,
            rw,
        })
    }

    /// Closes both pools, finishing outstanding work.
    pub async fn close(&self) {
        self.checkpointer.task.abort();
        self.indexer.stop();
        self.reader.close().await;
        self.writer.close().await;
        // A last full checkpoint so the database file stands on its own.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.checkpointer.pool)
            .await;
        self.checkpointer.pool.close().await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        accounts::create_user(&self.writer, new).await
    }

    async fn oidc_identity_user(&self, identity: &OidcIdentity) -> Result<Option<UserId>> {
        oidc::identity_user(&self.reader, identity).await
    }

    async fn oidc_identities_of(&self, user: UserId) -> Result<Vec<OidcIdentity>> {
        oidc::identities_of(&self.reader, user).await
    }

    async fn create_oidc_user(&self, new: NewUser, identity: OidcIdentity) -> Result<OidcSignup> {
        oidc::create_user(&self.writer, new, identity).await
    }

    async fn link_oidc_identity(
        &self,
        user: UserId,
        identity: OidcIdentity,
        now: Millis,
    ) -> Result<OidcLink> {
        oidc::link(&self.writer, user, identity, now).await
    }

    async fn put_oidc_pending(
        &self,
        key_hash: &[u8],
        payload: &str,
        expires_at: Millis,
        now: Millis,
        max_rows: u64,
    ) -> Result<bool> {
        oidc::put_pending(&self.writer, key_hash, payload, expires_at, now, max_rows).await
    }

    async fn take_oidc_pending(&self, key_hash: &[u8], now: Millis) -> Result<Option<String>> {
        oidc::take_pending(&self.writer, key_hash, now).await
    }

    async fn credentials_by_username(&self, key: &str) -> Result<Option<UserCredentials>> {
        accounts::credentials_by_username(&self.reader, key).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        accounts::user(&self.reader, id).await
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<User>> {
        accounts::users(&self.reader, ids).await
    }

    async fn search_users(&self, prefix_key: &str, limit: u32) -> Result<Vec<User>> {
        accounts::search_users(&self.reader, prefix_key, limit).await
    }

    async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<Option<User>> {
        accounts::update_profile(&self.writer, id, update).await
    }

    async fn create_device(
        &self,
        user_id: UserId,
        name: Option<String>,
        public_key: Option<String>,
        now: Millis,
    ) -> Result<DeviceId> {
        accounts::create_device(&self.writer, user_id, name, public_key, now).await
    }

    async fn insert_tokens(&self, tokens: Vec<NewToken>) -> Result<()> {
        accounts::insert_tokens(&self.writer, tokens).await
    }

    async fn access_token_owner(&self, hash: &[u8], now: Millis) -> Result<Option<TokenOwner>> {
        accounts::access_token_owner(&self.reader, hash, now).await
    }

    async fn spend_refresh_token(&self, hash: &[u8], now: Millis) -> Result<RefreshOutcome> {
        accounts::spend_refresh_token(&self.writer, hash, now).await
    }

    async fn revoke_device(&self, device_id: DeviceId, now: Millis) -> Result<()> {
        accounts::revoke_device(&self.writer, device_id, now).await
    }

    async fn change_password(
        &self,
        user: UserId,
        password_hash: &str,
        keep_device: DeviceId,
        now: Millis,
    ) -> Result<()> {
        accounts::change_password(&self.writer, user, password_hash, keep_device, now).await
    }

    async fn get_or_create_direct(
        &self,
        a: UserId,
        b: UserId,
        encrypted: bool,
        now: Millis,
    ) -> Result<(ConversationId, bool)> {
        conversations::get_or_create_direct(&self.writer, a, b, encrypted, now).await
    }

    async fn create_group(
        &self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        encrypted: bool,
        now: Millis,
    ) -> Result<ConversationId> {
        conversations::create_group(&self.writer, owner, title, members, encrypted, now).await
    }

    async fn conversation_for(
        &self,
        id: ConversationId,
        user: UserId,
    ) -> Result<Option<Conversation>> {
        conversations::conversation_for(&self.reader, id, user).await
    }

    async fn conversations_for(&self, user: UserId) -> Result<Vec<Conversation>> {
        conversations::conversations_for(&self.reader, user).await
    }

    async fn member(&self, id: ConversationId, user: UserId) -> Result<Option<Member>> {
        conversations::member(&self.reader, id, user).await
    }

    async fn member_ids(&self, id: ConversationId) -> Result<Vec<UserId>> {
        conversations::member_ids(&self.reader, id).await
    }

    async fn members(&self, id: ConversationId) -> Result<Vec<Member>> {
        conversations::members(&self.reader, id).await
    }

    async fn was_member(&self, id: ConversationId, user: UserId) -> Result<bool> {
        conversations::was_member(&self.reader, id, user).await
    }

    async fn audience(&self, id: ConversationId, user: UserId) -> Result<Option<Vec<UserId>>> {
        conversations::audience(&self.reader, id, user).await
    }

    async fn set_muted(&self, id: ConversationId, user: UserId, muted: bool) -> Result<bool> {
        conversations::set_muted(&self.writer, id, user, muted).await
    }

    async fn conversation_encrypted(&self, id: ConversationId) -> Result<Option<bool>> {
        e2ee::conversation_encrypted(&self.reader, id).await
    }

    async fn pin_device_key(&self, device: DeviceId, key: &str) -> Result<Option<String>> {
        e2ee::pin_device_key(&self.writer, device, key).await
    }

    async fn member_devices(
        &self,
        id: ConversationId,
        devices: &[DeviceId],
    ) -> Result<Vec<DeviceId>> {
        e2ee::member_devices(&self.reader, id, devices).await
    }

    async fn live_devices(&self, user: UserId) -> Result<Vec<DeviceInfo>> {
        e2ee::live_devices(&self.reader, user).await
    }

    async fn add_key_packages(
        &self,
        device: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        max_stock: i64,
        now: Millis,
    ) -> Result<Option<KeyPackageStock>> {
        e2ee::add_key_packages(&self.writer, device, packages, last_resort, max_stock, now).await
    }

    async fn key_package_stock(&self, device: DeviceId) -> Result<KeyPackageStock> {
        e2ee::key_package_stock(&self.reader, device).await
    }

    async fn claim_key_packages(
        &self,
        user: UserId,
        devices: Option<&[DeviceId]>,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>> {
        e2ee::claim_key_packages(&self.writer, user, devices).await
    }

    async fn send_friend_request(
        &self,
        from: UserId,
        to: UserId,
        message: Option<String>,
        max_pending: u32,
        now: Millis,
    ) -> Result<FriendRequestOutcome> {
        social::send_friend_request(&self.writer, from, to, message, max_pending, now).await
    }

    async fn friend_requests(&self, user: UserId, incoming: bool) -> Result<Vec<FriendRequest>> {
        social::friend_requests(&self.reader, user, incoming).await
    }

    async fn answer_friend_request(
        &self,
        id: i64,
        user: UserId,
        accept: bool,
        now: Millis,
    ) -> Result<FriendAnswer> {
        social::answer_friend_request(&self.writer, id, user, accept, now).await
    }

    async fn cancel_friend_request(&self, id: i64, user: UserId) -> Result<bool> {
        social::cancel_friend_request(&self.writer, id, user).await
    }

    async fn friends(&self, user: UserId) -> Result<Vec<(User, Millis)>> {
        social::friends(&self.reader, user).await
    }

    async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>> {
        social::friend_ids(&self.reader, user).await
    }

    async fn unfriend(&self, a: UserId, b: UserId) -> Result<bool> {
        social::unfriend(&self.writer, a, b).await
    }

    async fn block(&self, blocker: UserId, blocked: UserId, now: Millis) -> Result<bool> {
        social::block(&self.writer, blocker, blocked, now).await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<bool> {
        social::unblock(&self.writer, blocker, blocked).await
    }

    async fn blocked_users(&self, blocker: UserId) -> Result<Vec<User>> {
        social::blocked_users(&self.reader, blocker).await
    }

    async fn blocked_either(&self, a: UserId, b: UserId) -> Result<bool> {
        social::blocked_either(&self.reader, a, b).await
    }

    async fn blocks_among(&self, user: UserId, others: &[UserId]) -> Result<Vec<UserId>> {
        social::blocks_among(&self.reader, user, others).await
    }

    async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
        social::share_conversation(&self.reader, a, b).await
    }

    async fn presence_records(&self, users: &[UserId]) -> Result<HashMap<UserId, PresenceRecord>> {
        social::presence_records(&self.reader, users).await
    }

    async fn set_last_seen(&self, user: UserId, at: Millis) -> Result<()> {
        social::set_last_seen(&self.writer, user, at).await
    }

    async fn commit_batch(&self, ops: &[WriteOp], rules: CommitRules) -> Result<Vec<WriteOutcome>> {
        // The whole batch runs on the writer thread: one job, one
        // transaction, one fsync, one reply.
        let ops = ops.to_vec();
        let out = self
            .rw
            .transaction(move |t| batch::commit_batch(t, &ops, rules))
            .await?;
        self.indexer.wake();
        Ok(out)
    }

    async fn history(
        &self,
        id: ConversationId,
        user: UserId,
        query: HistoryQuery,
    ) -> Result<(Vec<MessageRecord>, bool)> {
        conversations::history(&self.reader, id, user, query).await
    }

    async fn sync(
        &self,
        user: UserId,
        cursors: &HashMap<ConversationId, Seq>,
        limits: SyncLimits,
    ) -> Result<Vec<SyncBatch>> {
        conversations::sync(&self.reader, user, cursors, limits).await
    }

    async fn delivered_seq(&self, device: DeviceId, id: ConversationId) -> Result<Seq> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT delivered_seq FROM device_cursors WHERE device_id = ? AND conversation_id = ?",
        )
        .bind(device)
        .bind(id)
        .fetch_optional(&self.reader)
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
        changes::message_for(&self.reader, id, user, seq).await
    }

    async fn search_messages(
        &self,
        user: UserId,
        query: &SearchQuery,
    ) -> Result<(Vec<SearchHit>, bool)> {
        crate::search::wait_for_index(&self.indexer, &self.index, crate::search::SEARCH_WAIT)
            .await?;
        search::search(&self.reader, user, query).await
    }

    async fn search_backlog(&self) -> Result<u64> {
        search::backlog(&self.reader).await
    }

    async fn rebuild_search_index(&self) -> Result<()> {
        search::rebuild(&self.writer).await?;
        self.indexer.wake();
        Ok(())
    }

    // --- media ----------------------------------------------------------

    async fn insert_media(&self, m: &MediaRecord, quota_bytes: i64) -> Result<MediaInsert> {
        media::insert_media(&self.writer, m, quota_bytes).await
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>> {
        media::media(&self.reader, id).await
    }

    async fn media_usage(&self, owner: UserId) -> Result<i64> {
        media::media_usage(&self.reader, owner).await
    }

    async fn can_read_media(&self, id: &str, user: UserId) -> Result<bool> {
        media::can_read_media(&self.reader, id, user).await
    }

    async fn set_media_thumbnail(&self, id: &str) -> Result<()> {
        media::set_media_thumbnail(&self.writer, id).await
    }
}
