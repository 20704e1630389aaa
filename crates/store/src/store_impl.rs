//! The one [`Store`](crate::Store) implementation text both backends share:
//! every method that only hands its arguments to the backend's module
//! function of the same name (`accounts::create_user`, …) is written here
//! once; [`store_impl!`] expands it inside `sqlite/mod.rs` and
//! `postgres/mod.rs`, where the module paths resolve to that backend's
//! modules. What is truly backend-specific (`commit_batch`) is passed in.

/// Implements [`Store`](crate::Store) for `$store`: reads run on the pool in
/// field `$r`, writes on the pool in field `$w` (SQLite has a reader pool and
/// one writer connection; PostgreSQL one pool for both). The items in the
/// braces (the backend's own methods) are added to the impl.
macro_rules! store_impl {
    ($store:ty, read: $r:ident, write: $w:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
            async fn ping(&self) -> Result<()> {
                dialect::query("SELECT 1").execute(&self.$r).await?;
                Ok(())
            }

            async fn create_user(&self, new: NewUser) -> Result<User> {
                accounts::create_user(&self.$w, new).await
            }

            async fn oidc_identity_user(&self, identity: &OidcIdentity) -> Result<Option<UserId>> {
                oidc::identity_user(&self.$r, identity).await
            }

            async fn oidc_identities_of(&self, user: UserId) -> Result<Vec<OidcIdentity>> {
                oidc::identities_of(&self.$r, user).await
            }

            async fn create_oidc_user(&self, new: NewUser, identity: OidcIdentity) -> Result<OidcSignup> {
                oidc::create_user(&self.$w, new, identity).await
            }

            async fn link_oidc_identity(
                &self,
                user: UserId,
                identity: OidcIdentity,
                now: Millis,
            ) -> Result<OidcLink> {
                oidc::link(&self.$w, user, identity, now).await
            }

            async fn put_oidc_pending(
                &self,
                key_hash: &[u8],
                payload: &str,
                expires_at: Millis,
                now: Millis,
                max_rows: u64,
            ) -> Result<bool> {
                oidc::put_pending(&self.$w, key_hash, payload, expires_at, now, max_rows).await
            }

            async fn take_oidc_pending(&self, key_hash: &[u8], now: Millis) -> Result<Option<String>> {
                oidc::take_pending(&self.$w, key_hash, now).await
            }

            async fn credentials_by_username(&self, key: &str) -> Result<Option<UserCredentials>> {
                accounts::credentials_by_username(&self.$r, key).await
            }

            async fn user(&self, id: UserId) -> Result<Option<User>> {
                accounts::user(&self.$r, id).await
            }

            async fn users(&self, ids: &[UserId]) -> Result<Vec<User>> {
                accounts::users(&self.$r, ids).await
            }

            async fn search_users(&self, prefix_key: &str, limit: u32) -> Result<Vec<User>> {
                accounts::search_users(&self.$r, prefix_key, limit).await
            }

            async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<Option<User>> {
                accounts::update_profile(&self.$w, id, update).await
            }

            async fn create_device(
                &self,
                user_id: UserId,
                name: Option<String>,
                public_key: Option<String>,
                now: Millis,
            ) -> Result<DeviceId> {
                accounts::create_device(&self.$w, user_id, name, public_key, now).await
            }

            async fn insert_tokens(&self, tokens: Vec<NewToken>) -> Result<()> {
                accounts::insert_tokens(&self.$w, tokens).await
            }

            async fn access_token_owner(&self, hash: &[u8], now: Millis) -> Result<Option<TokenOwner>> {
                accounts::access_token_owner(&self.$r, hash, now).await
            }

            async fn spend_refresh_token(&self, hash: &[u8], now: Millis) -> Result<RefreshOutcome> {
                accounts::spend_refresh_token(&self.$w, hash, now).await
            }

            async fn revoke_device(&self, device_id: DeviceId, now: Millis) -> Result<()> {
                accounts::revoke_device(&self.$w, device_id, now).await
            }

            async fn change_password(
                &self,
                user: UserId,
                password_hash: &str,
                keep_device: DeviceId,
                now: Millis,
            ) -> Result<()> {
                accounts::change_password(&self.$w, user, password_hash, keep_device, now).await
            }

            async fn get_or_create_direct(
                &self,
                a: UserId,
                b: UserId,
                encrypted: bool,
                now: Millis,
            ) -> Result<(ConversationId, bool)> {
                conversations::get_or_create_direct(&self.$w, a, b, encrypted, now).await
            }

            async fn create_group(
                &self,
                owner: UserId,
                title: &str,
                members: &[UserId],
                encrypted: bool,
                now: Millis,
            ) -> Result<ConversationId> {
                conversations::create_group(&self.$w, owner, title, members, encrypted, now).await
            }

            async fn conversation_for(
                &self,
                id: ConversationId,
                user: UserId,
            ) -> Result<Option<Conversation>> {
                conversations::conversation_for(&self.$r, id, user).await
            }

            async fn conversations_for(&self, user: UserId) -> Result<Vec<Conversation>> {
                conversations::conversations_for(&self.$r, user).await
            }

            async fn member(&self, id: ConversationId, user: UserId) -> Result<Option<Member>> {
                conversations::member(&self.$r, id, user).await
            }

            async fn member_ids(&self, id: ConversationId) -> Result<Vec<UserId>> {
                conversations::member_ids(&self.$r, id).await
            }

            async fn members(&self, id: ConversationId) -> Result<Vec<Member>> {
                conversations::members(&self.$r, id).await
            }

            async fn was_member(&self, id: ConversationId, user: UserId) -> Result<bool> {
                conversations::was_member(&self.$r, id, user).await
            }

            async fn audience(&self, id: ConversationId, user: UserId) -> Result<Option<Vec<UserId>>> {
                conversations::audience(&self.$r, id, user).await
            }

            async fn set_muted(&self, id: ConversationId, user: UserId, muted: bool) -> Result<bool> {
                conversations::set_muted(&self.$w, id, user, muted).await
            }

            async fn conversation_encrypted(&self, id: ConversationId) -> Result<Option<bool>> {
                e2ee::conversation_encrypted(&self.$r, id).await
            }

            async fn pin_device_key(&self, device: DeviceId, key: &str) -> Result<Option<String>> {
                e2ee::pin_device_key(&self.$w, device, key).await
            }

            async fn member_devices(
                &self,
                id: ConversationId,
                devices: &[DeviceId],
            ) -> Result<Vec<DeviceId>> {
                e2ee::member_devices(&self.$r, id, devices).await
            }

            async fn live_devices(&self, user: UserId) -> Result<Vec<DeviceInfo>> {
                e2ee::live_devices(&self.$r, user).await
            }

            async fn add_key_packages(
                &self,
                device: DeviceId,
                packages: Vec<Vec<u8>>,
                last_resort: Option<Vec<u8>>,
                max_stock: i64,
                now: Millis,
            ) -> Result<Option<KeyPackageStock>> {
                e2ee::add_key_packages(&self.$w, device, packages, last_resort, max_stock, now).await
            }

            async fn key_package_stock(&self, device: DeviceId) -> Result<KeyPackageStock> {
                e2ee::key_package_stock(&self.$r, device).await
            }

            async fn claim_key_packages(
                &self,
                user: UserId,
                devices: Option<&[DeviceId]>,
            ) -> Result<Vec<(DeviceId, Vec<u8>)>> {
                e2ee::claim_key_packages(&self.$w, user, devices).await
            }

            async fn send_friend_request(
                &self,
                from: UserId,
                to: UserId,
                message: Option<String>,
                max_pending: u32,
                now: Millis,
            ) -> Result<FriendRequestOutcome> {
                social::send_friend_request(&self.$w, from, to, message, max_pending, now).await
            }

            async fn friend_requests(&self, user: UserId, incoming: bool) -> Result<Vec<FriendRequest>> {
                social::friend_requests(&self.$r, user, incoming).await
            }

            async fn answer_friend_request(
                &self,
                id: i64,
                user: UserId,
                accept: bool,
                now: Millis,
            ) -> Result<FriendAnswer> {
                social::answer_friend_request(&self.$w, id, user, accept, now).await
            }

            async fn cancel_friend_request(&self, id: i64, user: UserId) -> Result<bool> {
                social::cancel_friend_request(&self.$w, id, user).await
            }

            async fn friends(&self, user: UserId) -> Result<Vec<(User, Millis)>> {
                social::friends(&self.$r, user).await
            }

            async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>> {
                social::friend_ids(&self.$r, user).await
            }

            async fn unfriend(&self, a: UserId, b: UserId) -> Result<bool> {
                social::unfriend(&self.$w, a, b).await
            }

            async fn block(&self, blocker: UserId, blocked: UserId, now: Millis) -> Result<bool> {
                social::block(&self.$w, blocker, blocked, now).await
            }

            async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<bool> {
                social::unblock(&self.$w, blocker, blocked).await
            }

            async fn blocked_users(&self, blocker: UserId) -> Result<Vec<User>> {
                social::blocked_users(&self.$r, blocker).await
            }

            async fn blocked_either(&self, a: UserId, b: UserId) -> Result<bool> {
                social::blocked_either(&self.$r, a, b).await
            }

            async fn blocks_among(&self, user: UserId, others: &[UserId]) -> Result<Vec<UserId>> {
                social::blocks_among(&self.$r, user, others).await
            }

            async fn share_conversation(&self, a: UserId, b: UserId) -> Result<bool> {
                social::share_conversation(&self.$r, a, b).await
            }

            async fn presence_records(&self, users: &[UserId]) -> Result<HashMap<UserId, PresenceRecord>> {
                social::presence_records(&self.$r, users).await
            }

            async fn set_last_seen(&self, user: UserId, at: Millis) -> Result<()> {
                social::set_last_seen(&self.$w, user, at).await
            }


            async fn history(
                &self,
                id: ConversationId,
                user: UserId,
                query: HistoryQuery,
            ) -> Result<(Vec<MessageRecord>, bool)> {
                conversations::history(&self.$r, id, user, query).await
            }

            async fn sync(
                &self,
                user: UserId,
                cursors: &HashMap<ConversationId, Seq>,
                limits: SyncLimits,
            ) -> Result<Vec<SyncBatch>> {
                conversations::sync(&self.$r, user, cursors, limits).await
            }

            async fn delivered_seq(&self, device: DeviceId, id: ConversationId) -> Result<Seq> {
                let seq: Option<i64> = dialect::query_scalar(
                    "SELECT delivered_seq FROM device_cursors WHERE device_id = $1 AND conversation_id = $2",
                )
                .bind(device)
                .bind(id)
                .fetch_optional(&self.$r)
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
                conversations::message_for(&self.$r, id, user, seq).await
            }

            async fn search_messages(
                &self,
                user: UserId,
                query: &SearchQuery,
            ) -> Result<(Vec<SearchHit>, bool)> {
                crate::search::wait_for_index(&self.indexer, &self.index, crate::search::SEARCH_WAIT)
                    .await?;
                search::search(&self.$r, user, query).await
            }

            async fn search_backlog(&self) -> Result<u64> {
                search::backlog(&self.$r).await
            }

            async fn rebuild_search_index(&self) -> Result<()> {
                search::rebuild(&self.$w).await?;
                self.indexer.wake();
                Ok(())
            }

            // --- media ----------------------------------------------------------

            async fn insert_media(&self, m: &MediaRecord, quota_bytes: i64) -> Result<MediaInsert> {
                media::insert_media(&self.$w, m, quota_bytes).await
            }

            async fn media(&self, id: &str) -> Result<Option<MediaRecord>> {
                media::media(&self.$r, id).await
            }

            async fn media_usage(&self, owner: UserId) -> Result<i64> {
                media::media_usage(&self.$r, owner).await
            }

            async fn can_read_media(&self, id: &str, user: UserId) -> Result<bool> {
                media::can_read_media(&self.$r, id, user).await
            }

            async fn set_media_thumbnail(&self, id: &str) -> Result<()> {
                media::set_media_thumbnail(&self.$w, id).await
            }

            $($own)*
        }
    };
}
