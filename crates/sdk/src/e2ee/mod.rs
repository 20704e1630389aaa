//! End-to-end encrypted conversations with MLS (RFC 9420, openmls), as
//! docs/protocol.md ("End-to-end encryption") describes them.
//!
//! [`E2ee`] is one device's MLS client: its [`DeviceKey`], its
//! KeyPackages on the server, and one MLS group per encrypted
//! conversation. It reads a conversation's messages over HTTP strictly in
//! seq order ([`E2ee::catch_up`]): commits are applied, application
//! messages decrypted and kept (an MLS message decrypts once only), Welcomes
//! addressed to this device joined. Sends go over HTTP; a send or commit
//! refused with `epoch_conflict` catches up (applying the winner) and is
//! made again. Everything, openmls's storage included, is kept in one file
//! in the session dir (`e2ee.json`, mode 0600), written atomically after
//! every change, so a crash loses nothing and repeats nothing.

mod attachment;
mod files;
mod identity;
mod provider;
mod roster;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use confab_proto::api::{Conversation, Member};
use confab_proto::e2ee::{
    ClaimedKeyPackages, DevicesResponse, EncryptedBody, KeyPackageStock, MlsKind,
    UploadKeyPackagesRequest,
};
use confab_proto::{ConversationId, DeviceId, ErrorCode, MessageKind, MessageRecord, Seq, UserId};
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, GroupId,
    KeyPackage, KeyPackageIn, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, ProcessedMessageContent, ProtocolMessage, ProtocolVersion,
    StagedWelcome,
};
use openmls_traits::OpenMlsProvider as _;
use reqwest::Method;
use serde_json::{json, Value};
use tls_codec::{Deserialize as _, Serialize as _};
use tokio::sync::Mutex;

pub use identity::{safety_number, safety_number_of_b64, DeviceKey};
pub use state::{E2eeContent, E2eeMessage};

use crate::api::{new_client_msg_id, HistoryQuery};
use crate::error::{Error, Result};
use crate::{Ack, Client};
use provider::Provider;
use state::{Outgoing, PendingCommit, State};

/// The one ciphersuite: `0x0001`.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// KeyPackages a device keeps on the server.
pub const KEY_PACKAGE_TARGET: i64 = 20;
/// Below this many the device uploads more.
pub const KEY_PACKAGE_LOW: i64 = 10;
/// How often a device gives its leaf in each encrypted conversation fresh
/// keys (a self-update commit before its next send), so a key stolen from
/// it stops opening new messages: once a week by default
/// ([`E2ee::set_key_update_interval`]).
pub const KEY_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// How many times a send or commit is made again after `epoch_conflict`.
const MAX_ATTEMPTS: usize = 16;
/// The file of a device's MLS state in its session dir.
pub const STATE_FILE: &str = "e2ee.json";
/// The file of a device's key in its session dir.
pub const KEY_FILE: &str = "device_key.json";

/// An attachment to encrypt and send.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `image`, `voice` or `file`.
    pub kind: MessageKind,
    /// The file name shown.
    pub name: String,
    /// Its real type.
    pub mime: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// Image size, when known.
    pub width: Option<u32>,
    /// Image size, when known.
    pub height: Option<u32>,
    /// Voice length, when known.
    pub duration_ms: Option<u64>,
}

impl Attachment {
    /// Reads a file to send as `kind` (`image`, `voice` or `file`), its
    /// type guessed from the name.
    pub fn from_file(path: &Path, kind: MessageKind) -> Result<Attachment> {
        let data = std::fs::read(path)
            .map_err(|e| Error::InvalidInput(format!("reading {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        Ok(Attachment {
            kind,
            name,
            mime: crate::guess_content_type(path).to_owned(),
            data,
            width: None,
            height: None,
            duration_ms: None,
        })
    }
}

/// One device's end-to-end encryption: see the module docs.
pub struct E2ee {
    client: Client,
    user_id: UserId,
    device_id: DeviceId,
    key: DeviceKey,
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Sends and commits refused with `epoch_conflict` and made again.
    conflicts: std::sync::atomic::AtomicU64,
    /// See [`KEY_UPDATE_INTERVAL`].
    key_update_interval: std::sync::Mutex<std::time::Duration>,
}

struct Inner {
    provider: Provider,
    state: State,
    /// When each conversation's roster was last compared with the server.
    reconciled: HashMap<ConversationId, Instant>,
}

impl std::fmt::Debug for E2ee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2ee")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("key", &self.key)
            .finish()
    }
}

fn mls_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::InvalidInput(format!("{what}: {e:?}"))
}

fn group_id(id: ConversationId) -> GroupId {
    GroupId::from_slice(format!("confab:{id}").as_bytes())
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(3)
        .padding_size(32)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(3)
        .padding_size(32)
        .build()
}

fn encode(msg: &MlsMessageOut) -> Result<String> {
    Ok(B64.encode(
        msg.tls_serialize_detached()
            .map_err(|e| mls_err("cannot encode an MLS message", e))?,
    ))
}

fn decode_message(b64: &str) -> std::result::Result<MlsMessageIn, String> {
    let bytes = B64
        .decode(b64)
        .map_err(|_| "the MLS message is not base64".to_owned())?;
    MlsMessageIn::tls_deserialize_exact(bytes.as_slice())
        .map_err(|e| format!("not an MLS message: {e:?}"))
}

impl E2ee {
    /// Opens (or starts) the MLS state of the client's logged-in device in
    /// `dir`. The device key must be in `dir` ([`KEY_FILE`]): the one the
    /// device registered at login ([`E2ee::login`] does both).
    pub async fn open(client: Client, dir: &Path) -> Result<E2ee> {
        let session = client.session().ok_or(Error::NoSession)?;
        let key = DeviceKey::load(&dir.join(KEY_FILE))?.ok_or_else(|| {
            Error::InvalidInput(format!(
                "no device key in {}: log in with E2ee::login to make one",
                dir.display()
            ))
        })?;
        let path = dir.join(STATE_FILE);
        let state: State = files::read_json(&path)?.unwrap_or_default();
        let provider = Provider::restore(&state.storage);
        let e2ee = E2ee {
            client,
            user_id: session.user.id,
            device_id: session.device_id,
            key,
            path,
            inner: Mutex::new(Inner {
                provider,
                state,
                reconciled: HashMap::new(),
            }),
            conflicts: std::sync::atomic::AtomicU64::new(0),
            key_update_interval: std::sync::Mutex::new(KEY_UPDATE_INTERVAL),
        };
        e2ee.resume().await?;
        // Welcomes used some KeyPackages up: top the stock up (best effort:
        // the next open tries again).
        if let Err(e) = e2ee.publish_key_packages().await {
            tracing::debug!("could not refill key packages: {e}");
        }
        Ok(e2ee)
    }

    /// Logs `client` in as a new device with a fresh device key, keeps the
    /// key in `dir` and opens its MLS state there (and publishes
    /// KeyPackages).
    pub async fn login(
        client: Client,
        dir: &Path,
        username: &str,
        password: &str,
        device_name: Option<&str>,
    ) -> Result<E2ee> {
        let key = DeviceKey::generate()?;
        client
            .login_with_key(username, password, device_name, Some(&key.public_b64()))
            .await?;
        E2ee::start_device(client, dir, key).await
    }

    /// Starts the MLS state of `client`'s device, just signed in (by
    /// password or a provider) with `key`'s public half registered: keeps
    /// the key in `dir`, drops any older device's state there, and opens
    /// (and publishes KeyPackages).
    pub async fn start_device(client: Client, dir: &Path, key: DeviceKey) -> Result<E2ee> {
        key.save(&dir.join(KEY_FILE))?;
        // A new device starts with a new MLS state.
        match std::fs::remove_file(dir.join(STATE_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::InvalidInput(format!(
                    "cannot remove {}: {e}",
                    dir.join(STATE_FILE).display()
                )))
            }
        }
        let e2ee = E2ee::open(client, dir).await?;
        // `open` tops KeyPackages up on a best-effort basis; a new device
        // without any cannot be added anywhere, so here a failure is one.
        e2ee.publish_key_packages().await?;
        Ok(e2ee)
    }

    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This device's key.
    pub fn device_key(&self) -> &DeviceKey {
        &self.key
    }

    /// How many of this device's sends and commits lost an epoch race
    /// (`epoch_conflict`) and were made again since it was opened.
    pub fn epoch_conflicts(&self) -> u64 {
        self.conflicts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How often this device's leaf gets fresh keys in each conversation
    /// it sends to (see [`KEY_UPDATE_INTERVAL`]; zero: before every send).
    pub fn set_key_update_interval(&self, every: std::time::Duration) {
        if let Ok(mut i) = self.key_update_interval.lock() {
            *i = every;
        }
    }

    /// Whether this device's leaf in `id` is due for fresh keys.
    fn keys_due(&self, inner: &Inner, id: ConversationId) -> bool {
        let every = self
            .key_update_interval
            .lock()
            .map(|i| *i)
            .unwrap_or(KEY_UPDATE_INTERVAL);
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        match inner
            .state
            .conversations
            .get(&id)
            .and_then(|c| c.keys_fresh_at)
        {
            Some(at) => now_ms().saturating_sub(at) >= every_ms,
            // A state from before the schedule: due once.
            None => true,
        }
    }

    fn count_conflict(&self) {
        self.conflicts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// What this device makes of `m` without keeping anything: for tests
    /// and tools (a message shown to a removed member by a server that
    /// should not have, say).
    pub async fn decrypt_detached(&self, id: ConversationId, m: MessageRecord) -> E2eeContent {
        let mut inner = self.inner.lock().await;
        self.content_of(&mut inner, id, &m)
    }

    /// This device's safety number.
    pub fn safety_number(&self) -> String {
        self.key.safety_number()
    }

    fn identity(&self) -> Vec<u8> {
        format!("{}:{}", self.user_id, self.device_id).into_bytes()
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity()).into(),
            signature_key: self.key.public().into(),
        }
    }

    fn save(&self, inner: &mut Inner) -> Result<()> {
        inner.state.storage = inner.provider.snapshot();
        files::write_private(&self.path, &inner.state)
    }

    // --- KeyPackages ----------------------------------------------------

    /// Tops the device's KeyPackages on the server up to
    /// [`KEY_PACKAGE_TARGET`] when below [`KEY_PACKAGE_LOW`], with a
    /// last-resort one when it has none.
    pub async fn publish_key_packages(&self) -> Result<KeyPackageStock> {
        let stock: KeyPackageStock = self
            .client
            .call(Method::GET, "/v1/keys/packages", &[], None::<&()>)
            .await?;
        if stock.stock >= KEY_PACKAGE_LOW && stock.last_resort {
            return Ok(stock);
        }
        let mut inner = self.inner.lock().await;
        let n = (KEY_PACKAGE_TARGET - stock.stock).max(0);
        let mut req = UploadKeyPackagesRequest::default();
        for _ in 0..n {
            req.key_packages.push(self.new_key_package(&inner, false)?);
        }
        if !stock.last_resort {
            req.last_resort = Some(self.new_key_package(&inner, true)?);
        }
        // The private halves must be on disk before anyone can use them.
        self.save(&mut inner)?;
        drop(inner);
        self.client
            .call(Method::POST, "/v1/keys/packages", &[], Some(&req))
            .await
    }

    fn new_key_package(&self, inner: &Inner, last_resort: bool) -> Result<String> {
        // Every leaf says it understands the last-resort extension, which a
        // last-resort KeyPackage carries (RFC 9420 requires the leaf's
        // capabilities to list every extension of its KeyPackage).
        let capabilities = Capabilities::builder()
            .extensions(vec![ExtensionType::LastResort])
            .build();
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &inner.provider,
                &self.key.pair,
                self.credential(),
            )
            .map_err(|e| mls_err("cannot make a key package", e))?;
        Ok(B64.encode(
            bundle
                .key_package()
                .tls_serialize_detached()
                .map_err(|e| mls_err("cannot encode a key package", e))?,
        ))
    }

    // --- conversations --------------------------------------------------

    /// Creates an encrypted group with `member_ids` and adds every device
    /// of every member that has KeyPackages (in one commit).
    pub async fn create_group(&self, title: &str, member_ids: &[UserId]) -> Result<Conversation> {
        let conv = self
            .client
            .create_encrypted_group(title, member_ids)
            .await?;
        self.start_group(conv.id).await?;
        self.reconcile(conv.id).await?;
        self.client.conversation(conv.id).await
    }

    /// Gets or creates the encrypted direct conversation with `user_id`;
    /// when it is new, this device makes its MLS group.
    pub async fn create_direct(&self, user_id: UserId) -> Result<Conversation> {
        let conv = self.client.encrypted_direct_conversation(user_id).await?;
        // A conversation nobody has said anything in gets its group now
        // (if the other side makes one at the same time, the first commit
        // wins and the other device joins it from its Welcome).
        if conv.mls_epoch == Some(0) && conv.last_seq == 0 {
            self.start_group(conv.id).await?;
            self.reconcile(conv.id).await?;
        }
        self.client.conversation(conv.id).await
    }

    async fn start_group(&self, id: ConversationId) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if MlsGroup::load(inner.provider.storage(), &group_id(id))
            .map_err(|e| mls_err("storage", e))?
            .is_some()
        {
            return Ok(());
        }
        MlsGroup::new_with_group_id(
            &inner.provider,
            &self.key.pair,
            &create_config(),
            group_id(id),
            self.credential(),
        )
        .map_err(|e| mls_err("cannot create the MLS group", e))?;
        let cs = inner.state.conversations.entry(id).or_default();
        cs.joined_epoch = Some(0);
        cs.keys_fresh_at = Some(now_ms());
        self.save(&mut inner)
    }

    /// Adds users to an encrypted group: on the server, then all their
    /// devices in one commit.
    pub async fn add_members(&self, id: ConversationId, user_ids: &[UserId]) -> Result<()> {
        self.client.add_members(id, user_ids).await?;
        self.reconcile(id).await
    }

    /// Removes a user from an encrypted group: first a commit removing all
    /// their devices (after it they can decrypt nothing), then on the
    /// server.
    pub async fn remove_member(&self, id: ConversationId, user_id: UserId) -> Result<()> {
        // The server decides who may remove whom; ask it before a commit
        // takes their keys away.
        let members = self.client.members(id).await?;
        let role = |u: UserId| members.iter().find(|m| m.user_id == u).map(|m| m.role);
        use confab_proto::api::Role;
        let allowed = match (role(self.user_id), role(user_id)) {
            (_, None) => false,
            (Some(Role::Owner), _) => user_id != self.user_id,
            (Some(Role::Admin), Some(Role::Member)) => true,
            _ => false,
        };
        if !allowed {
            return Err(Error::Api(confab_proto::ApiError::new(
                ErrorCode::Forbidden,
                "your role in this group does not allow removing that member",
            )));
        }
        self.reconcile_excluding(id, &[user_id]).await?;
        self.client.remove_member(id, user_id).await
    }

    /// Brings the group's devices in line with the server: adds members'
    /// devices that are missing (new devices, members added elsewhere) and
    /// removes the leaves of revoked devices and of users no longer
    /// members, in one commit (none when nothing differs).
    pub async fn reconcile(&self, id: ConversationId) -> Result<()> {
        self.reconcile_excluding(id, &[]).await
    }

    async fn reconcile_excluding(&self, id: ConversationId, exclude: &[UserId]) -> Result<()> {
        let members: Vec<Member> = self.client.members(id).await?;
        let mut live: HashMap<UserId, Vec<(DeviceId, Option<String>)>> = HashMap::new();
        for m in &members {
            if exclude.contains(&m.user_id) {
                continue;
            }
            let devices: DevicesResponse = self
                .client
                .call(
                    Method::GET,
                    &format!("/v1/users/{}/devices", m.user_id),
                    &[],
                    None::<&()>,
                )
                .await?;
            live.insert(
                m.user_id,
                devices
                    .devices
                    .into_iter()
                    .map(|d| (d.device_id, d.public_key))
                    .collect(),
            );
        }
        let mut inner = self.inner.lock().await;
        inner.reconciled.insert(id, Instant::now());
        for _ in 0..MAX_ATTEMPTS {
            self.catch_up_locked(&mut inner, id).await?;
            let Some(group) = self.load_group(&inner, id)? else {
                return Err(Error::InvalidInput(
                    "this device is not in the conversation's encryption group yet (waiting for keys)"
                        .into(),
                ));
            };
            let plan = roster::plan(&group, self.user_id, self.device_id, &live);
            let mut adds = Vec::new();
            for (user, devices) in &plan.missing {
                adds.extend(self.claim(*user, devices, &live).await?);
            }
            if adds.is_empty() && plan.stale.is_empty() {
                if let Some(cs) = inner.state.conversations.get_mut(&id) {
                    cs.needs_reconcile = false;
                }
                return Ok(());
            }
            let welcome_devices: Vec<DeviceId> = adds.iter().map(|(d, _)| *d).collect();
            let packages: Vec<KeyPackage> = adds.into_iter().map(|(_, kp)| kp).collect();
            let stale = plan.stale.clone();
            let outcome = self
                .commit_locked(&mut inner, id, welcome_devices, move |g, p, s| {
                    g.commit_builder()
                        .propose_adds(packages)
                        .propose_removals(stale)
                        .load_psks(p.storage())
                        .map_err(|e| mls_err("commit", e))?
                        .build(p.rand(), p.crypto(), s, |_| true)
                        .map_err(|e| mls_err("commit", e))?
                        .stage_commit(p)
                        .map_err(|e| mls_err("commit", e))
                })
                .await?;
            if outcome {
                if let Some(cs) = inner.state.conversations.get_mut(&id) {
                    cs.needs_reconcile = false;
                }
                self.save(&mut inner)?;
                return Ok(());
            }
        }
        Err(Error::Api(confab_proto::ApiError::new(
            ErrorCode::EpochConflict,
            "gave up after repeated epoch conflicts",
        )))
    }

    /// Claims one KeyPackage of each of `devices` of `user` and checks it
    /// names that device and carries its registered key.
    async fn claim(
        &self,
        user: UserId,
        devices: &[DeviceId],
        live: &HashMap<UserId, Vec<(DeviceId, Option<String>)>>,
    ) -> Result<Vec<(DeviceId, KeyPackage)>> {
        let list = devices
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let claimed: ClaimedKeyPackages = self
            .client
            .call(
                Method::GET,
                &format!("/v1/users/{user}/key-packages"),
                &[("device_ids", list)],
                None::<&()>,
            )
            .await?;
        let crypto = openmls_rust_crypto::RustCrypto::default();
        let mut out = Vec::new();
        for c in claimed.key_packages {
            let Ok(bytes) = B64.decode(&c.key_package) else {
                continue;
            };
            let Ok(kp) = KeyPackageIn::tls_deserialize_exact(bytes.as_slice()) else {
                continue;
            };
            let Ok(kp) = kp.validate(&crypto, ProtocolVersion::Mls10) else {
                continue;
            };
            let registered = live
                .get(&user)
                .and_then(|ds| ds.iter().find(|(d, _)| *d == c.device_id))
                .and_then(|(_, k)| k.clone());
            if !roster::leaf_is(&kp, user, c.device_id, registered.as_deref()) {
                tracing::warn!(
                    user,
                    device = c.device_id,
                    "refused a key package that does not match its device"
                );
                continue;
            }
            out.push((c.device_id, kp));
        }
        Ok(out)
    }

    /// A self-update commit: fresh keys for this device's leaf (on a
    /// schedule, and after a device of the group was revoked).
    pub async fn update_keys(&self, id: ConversationId) -> Result<()> {
        let mut inner = self.inner.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            self.catch_up_locked(&mut inner, id).await?;
            let done = self
                .commit_locked(&mut inner, id, Vec::new(), |g, p, s| {
                    g.commit_builder()
                        .force_self_update(true)
                        .load_psks(p.storage())
                        .map_err(|e| mls_err("commit", e))?
                        .build(p.rand(), p.crypto(), s, |_| true)
                        .map_err(|e| mls_err("commit", e))?
                        .stage_commit(p)
                        .map_err(|e| mls_err("commit", e))
                })
                .await?;
            if done {
                inner
                    .state
                    .conversations
                    .entry(id)
                    .or_default()
                    .keys_fresh_at = Some(now_ms());
                return self.save(&mut inner);
            }
        }
        Err(Error::Api(confab_proto::ApiError::new(
            ErrorCode::EpochConflict,
            "gave up after repeated epoch conflicts",
        )))
    }

    fn load_group(&self, inner: &Inner, id: ConversationId) -> Result<Option<MlsGroup>> {
        Ok(MlsGroup::load(inner.provider.storage(), &group_id(id))
            .map_err(|e| mls_err("storage", e))?
            .filter(MlsGroup::is_active))
    }

    /// The epoch this device's group of `id` is at, if it is in one.
    pub async fn epoch(&self, id: ConversationId) -> Result<Option<u64>> {
        let inner = self.inner.lock().await;
        Ok(self.load_group(&inner, id)?.map(|g| g.epoch().as_u64()))
    }

    /// The `"<user_id>:<device_id>"` of every leaf of the group, sorted.
    pub async fn group_devices(&self, id: ConversationId) -> Result<Vec<(UserId, DeviceId)>> {
        let inner = self.inner.lock().await;
        Ok(match self.load_group(&inner, id)? {
            Some(g) => roster::leaves(&g)
                .into_iter()
                .map(|(_, u, d)| (u, d))
                .collect(),
            None => Vec::new(),
        })
    }

    /// Stages a commit made by `make`, sends it, and applies it once the
    /// server took it. `Ok(false)`: it lost to another commit for the same
    /// epoch (which is applied now); make it again.
    async fn commit_locked<F>(
        &self,
        inner: &mut Inner,
        id: ConversationId,
        welcome_devices: Vec<DeviceId>,
        make: F,
    ) -> Result<bool>
    where
        F: FnOnce(
            &mut MlsGroup,
            &Provider,
            &openmls_basic_credential::SignatureKeyPair,
        ) -> Result<openmls::prelude::CommitMessageBundle>,
    {
        let mut group = self.load_group(inner, id)?.ok_or_else(|| {
            Error::InvalidInput("this device is not in the conversation's encryption group".into())
        })?;
        let epoch = group.epoch().as_u64();
        let bundle = make(&mut group, &inner.provider, &self.key.pair)?;
        let (commit, welcome, _info) = bundle.into_messages();
        let mut body = EncryptedBody {
            ciphertext: encode(&commit)?,
            mls: MlsKind::Commit,
            epoch,
            welcome: None,
            welcome_devices: Vec::new(),
            media_id: None,
        };
        if let Some(w) = welcome {
            body.welcome = Some(encode(&w)?);
            body.welcome_devices = welcome_devices;
        }
        let body = serde_json::to_value(&body).map_err(|e| mls_err("encode", e))?;
        let client_msg_id = new_client_msg_id();
        inner
            .state
            .conversations
            .entry(id)
            .or_default()
            .pending_commit = Some(PendingCommit {
            client_msg_id: client_msg_id.clone(),
            body: body.clone(),
        });
        self.save(inner)?;
        self.send_pending_commit(inner, id).await
    }

    /// Sends the staged commit of `id` (again, after a crash: same
    /// `client_msg_id`). `Ok(true)` when it was taken and is applied.
    async fn send_pending_commit(&self, inner: &mut Inner, id: ConversationId) -> Result<bool> {
        let Some(pending) = inner
            .state
            .conversations
            .get(&id)
            .and_then(|c| c.pending_commit.clone())
        else {
            return Ok(false);
        };
        match self
            .client
            .send_http(
                id,
                &pending.client_msg_id,
                MessageKind::Encrypted,
                pending.body,
            )
            .await
        {
            Ok(_) => {
                // The catch-up applies it in its place (it knows the
                // client_msg_id).
                self.catch_up_locked(inner, id).await?;
                Ok(true)
            }
            Err(e) if e.code() == Some(ErrorCode::EpochConflict) => {
                self.count_conflict();
                self.drop_pending_commit(inner, id)?;
                Ok(false)
            }
            Err(e) => {
                if e.code().is_some_and(|c| !c.is_retryable()) {
                    self.drop_pending_commit(inner, id)?;
                }
                Err(e)
            }
        }
    }

    fn drop_pending_commit(&self, inner: &mut Inner, id: ConversationId) -> Result<()> {
        if let Some(mut g) = MlsGroup::load(inner.provider.storage(), &group_id(id))
            .map_err(|e| mls_err("storage", e))?
        {
            g.clear_pending_commit(inner.provider.storage())
                .map_err(|e| mls_err("storage", e))?;
        }
        if let Some(cs) = inner.state.conversations.get_mut(&id) {
            cs.pending_commit = None;
        }
        self.save(inner)
    }

    // --- sending --------------------------------------------------------

    /// Sends a text message; answers its seq.
    pub async fn send_text(&self, id: ConversationId, text: &str) -> Result<Seq> {
        let ack = self
            .send_text_with_id(id, &new_client_msg_id(), text)
            .await?;
        Ok(ack.seq)
    }

    /// Sends a text message under the caller's idempotency key (a client
    /// that shows the line before its ack finds it again by this key);
    /// answers the ack.
    pub async fn send_text_with_id(
        &self,
        id: ConversationId,
        client_msg_id: &str,
        text: &str,
    ) -> Result<Ack> {
        self.send_plain(
            id,
            client_msg_id.to_owned(),
            json!({"kind": "text", "body": {"text": text}}),
            None,
        )
        .await
    }

    /// Encrypts an attachment with a fresh key, uploads the ciphertext and
    /// sends the key inside the MLS message; answers its seq.
    pub async fn send_attachment(&self, id: ConversationId, a: Attachment) -> Result<Seq> {
        let sealed = attachment::seal(&a.data)?;
        let uploaded = self
            .client
            .upload_bytes(sealed.ciphertext.clone(), "application/x-confab-encrypted")
            .await?;
        let mut body = json!({
            "media_id": uploaded.media_id.clone(),
            "key": sealed.key,
            "nonce": sealed.nonce,
            "sha256": sealed.sha256,
            "name": a.name,
            "mime": a.mime,
            "size": a.data.len(),
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(w) = a.width {
                obj.insert("width".into(), w.into());
            }
            if let Some(h) = a.height {
                obj.insert("height".into(), h.into());
            }
            if let Some(d) = a.duration_ms {
                obj.insert("duration_ms".into(), d.into());
            }
        }
        let plain = json!({"kind": a.kind.as_str(), "body": body});
        let ack = self
            .send_plain(id, new_client_msg_id(), plain, Some(uploaded.media_id))
            .await?;
        Ok(ack.seq)
    }

    /// Fetches and decrypts the attachment of a decrypted media message.
    pub async fn download_attachment(&self, body: &Value) -> Result<Vec<u8>> {
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Decode(format!("attachment without {k}")))
        };
        let bytes = self.client.media_bytes(field("media_id")?).await?;
        attachment::open(&bytes, field("key")?, field("nonce")?, field("sha256")?)
    }

    async fn send_plain(
        &self,
        id: ConversationId,
        client_msg_id: String,
        plaintext: Value,
        media_id: Option<String>,
    ) -> Result<Ack> {
        let stale = {
            let inner = self.inner.lock().await;
            let due = inner
                .reconciled
                .get(&id)
                .is_none_or(|t| t.elapsed().as_secs() > 300);
            due || inner
                .state
                .conversations
                .get(&id)
                .is_some_and(|c| c.needs_reconcile)
        };
        if stale {
            // Leaves of members who left go before anything is said.
            if let Err(e) = self.reconcile(id).await {
                tracing::debug!(conversation = id, "reconcile before send failed: {e}");
            }
        }
        let due = {
            let inner = self.inner.lock().await;
            self.load_group(&inner, id)?.is_some() && self.keys_due(&inner, id)
        };
        if due {
            // Fresh keys on the schedule, before anything more is said
            // (best effort: the message goes anyway, the next send tries
            // again).
            if let Err(e) = self.update_keys(id).await {
                tracing::debug!(conversation = id, "scheduled key update failed: {e}");
            }
        }
        let mut inner = self.inner.lock().await;
        self.send_locked(&mut inner, id, client_msg_id, plaintext, media_id)
            .await
    }

    async fn send_locked(
        &self,
        inner: &mut Inner,
        id: ConversationId,
        client_msg_id: String,
        plaintext: Value,
        media_id: Option<String>,
    ) -> Result<Ack> {
        for _ in 0..MAX_ATTEMPTS {
            self.catch_up_locked(inner, id).await?;
            let mut group = self.load_group(inner, id)?.ok_or_else(|| {
                Error::InvalidInput(
                    "waiting for keys: this device has not been added to the conversation's encryption group yet"
                        .into(),
                )
            })?;
            let bytes = serde_json::to_vec(&plaintext).map_err(|e| mls_err("encode", e))?;
            let msg = group
                .create_message(&inner.provider, &self.key.pair, &bytes)
                .map_err(|e| mls_err("cannot encrypt", e))?;
            let body = serde_json::to_value(EncryptedBody {
                ciphertext: encode(&msg)?,
                mls: MlsKind::Application,
                epoch: group.epoch().as_u64(),
                welcome: None,
                welcome_devices: Vec::new(),
                media_id: media_id.clone(),
            })
            .map_err(|e| mls_err("encode", e))?;
            inner.state.outbox.insert(
                client_msg_id.clone(),
                Outgoing {
                    conversation_id: id,
                    client_msg_id: client_msg_id.clone(),
                    plaintext: plaintext.clone(),
                    body: body.clone(),
                },
            );
            self.save(inner)?;
            match self
                .client
                .send_http(id, &client_msg_id, MessageKind::Encrypted, body)
                .await
            {
                Ok(ack) => {
                    self.record_own(inner, id, &client_msg_id, ack.seq, ack.ts)?;
                    return Ok(Ack::from(ack));
                }
                Err(e) if e.code() == Some(ErrorCode::EpochConflict) => {
                    self.count_conflict();
                    continue;
                }
                Err(e) => {
                    if e.code().is_some_and(|c| !c.is_retryable()) {
                        inner.state.outbox.remove(&client_msg_id);
                        self.save(inner)?;
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Api(confab_proto::ApiError::new(
            ErrorCode::EpochConflict,
            "gave up after repeated epoch conflicts",
        )))
    }

    /// Keeps the plaintext of this device's own acknowledged message (it
    /// cannot decrypt its own MLS messages).
    fn record_own(
        &self,
        inner: &mut Inner,
        id: ConversationId,
        client_msg_id: &str,
        seq: Seq,
        ts: i64,
    ) -> Result<()> {
        if let Some(out) = inner.state.outbox.remove(client_msg_id) {
            let cs = inner.state.conversations.entry(id).or_default();
            cs.messages.insert(
                seq,
                E2eeMessage {
                    seq,
                    sender_id: self.user_id,
                    ts,
                    content: plain_content(&out.plaintext),
                },
            );
        }
        self.save(inner)
    }

    /// Sends again what a crash left unacknowledged.
    async fn resume(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let pending: Vec<ConversationId> = inner
            .state
            .conversations
            .iter()
            .filter(|(_, c)| c.pending_commit.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            self.send_pending_commit(&mut inner, id).await?;
        }
        let outbox: Vec<Outgoing> = inner.state.outbox.values().cloned().collect();
        for out in outbox {
            let sent = self
                .client
                .send_http(
                    out.conversation_id,
                    &out.client_msg_id,
                    MessageKind::Encrypted,
                    out.body.clone(),
                )
                .await;
            match sent {
                Ok(ack) => {
                    self.record_own(
                        &mut inner,
                        out.conversation_id,
                        &out.client_msg_id,
                        ack.seq,
                        ack.ts,
                    )?;
                }
                Err(e) if e.code() == Some(ErrorCode::EpochConflict) => {
                    self.send_locked(
                        &mut inner,
                        out.conversation_id,
                        out.client_msg_id.clone(),
                        out.plaintext.clone(),
                        out.body
                            .get("media_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    )
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // --- receiving ------------------------------------------------------

    /// Processes every message of `id` after what this device has seen, in
    /// seq order, and answers what they were.
    pub async fn catch_up(&self, id: ConversationId) -> Result<Vec<E2eeMessage>> {
        let mut inner = self.inner.lock().await;
        let before = inner
            .state
            .conversations
            .get(&id)
            .map_or(0, |c| c.processed_seq);
        self.catch_up_locked(&mut inner, id).await?;
        Ok(inner
            .state
            .conversations
            .get(&id)
            .map(|c| {
                c.messages
                    .range(before + 1..)
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Everything this device has seen of `id`, by seq (after catching up).
    pub async fn history(&self, id: ConversationId) -> Result<Vec<E2eeMessage>> {
        self.history_from(id, 0).await
    }

    /// What this device has seen of `id` from seq `from` on, by seq (after
    /// catching up).
    pub async fn history_from(&self, id: ConversationId, from: Seq) -> Result<Vec<E2eeMessage>> {
        self.catch_up(id).await?;
        let inner = self.inner.lock().await;
        Ok(inner
            .state
            .conversations
            .get(&id)
            .map(|c| c.messages.range(from..).map(|(_, m)| m.clone()).collect())
            .unwrap_or_default())
    }

    async fn catch_up_locked(&self, inner: &mut Inner, id: ConversationId) -> Result<()> {
        loop {
            let after = inner
                .state
                .conversations
                .get(&id)
                .map_or(0, |c| c.processed_seq);
            let page = self
                .client
                .history(id, HistoryQuery::after(after, 200))
                .await?;
            let count = page.messages.len();
            for m in page.messages {
                self.process(inner, id, m);
            }
            if count > 0 {
                self.save(inner)?;
            }
            if !page.has_more || count == 0 {
                return Ok(());
            }
        }
    }

    /// Applies one message (never fails: what cannot be read is recorded
    /// with the reason, and the conversation moves on).
    fn process(&self, inner: &mut Inner, id: ConversationId, m: MessageRecord) {
        let seq = m.seq;
        let known = inner
            .state
            .conversations
            .get(&id)
            .is_some_and(|c| c.messages.contains_key(&seq) || c.processed_seq >= seq);
        let content = if known {
            None
        } else {
            Some(self.content_of(inner, id, &m))
        };
        let cs = inner.state.conversations.entry(id).or_default();
        cs.processed_seq = cs.processed_seq.max(seq);
        if let Some(content) = content {
            cs.messages.insert(
                seq,
                E2eeMessage {
                    seq,
                    sender_id: m.sender_id,
                    ts: m.ts,
                    content,
                },
            );
        }
    }

    fn content_of(&self, inner: &mut Inner, id: ConversationId, m: &MessageRecord) -> E2eeContent {
        match m.kind {
            MessageKind::System => {
                let event = m.body.get("event").and_then(Value::as_str).unwrap_or("");
                if event == "member_left" {
                    inner
                        .state
                        .conversations
                        .entry(id)
                        .or_default()
                        .needs_reconcile = true;
                }
                return E2eeContent::Notice {
                    body: m.body.clone(),
                };
            }
            MessageKind::Encrypted => {}
            other => {
                return E2eeContent::Failed {
                    reason: format!(
                        "a plain {} message in an encrypted conversation",
                        other.as_str()
                    ),
                }
            }
        }
        let body: EncryptedBody = match serde_json::from_value(m.body.clone()) {
            Ok(b) => b,
            Err(_) => {
                return E2eeContent::Failed {
                    reason: if m.deleted {
                        "deleted for everyone".into()
                    } else {
                        "not an MLS message body".into()
                    },
                }
            }
        };
        // This device's own commit: apply what it staged.
        let own_commit = inner
            .state
            .conversations
            .get(&id)
            .and_then(|c| c.pending_commit.as_ref())
            .is_some_and(|p| p.client_msg_id == m.client_msg_id)
            && m.sender_id == self.user_id;
        if own_commit {
            return self.merge_own_commit(inner, id);
        }
        // This device's own message whose ack was lost.
        if m.sender_id == self.user_id {
            if let Some(out) = inner.state.outbox.remove(&m.client_msg_id) {
                return plain_content(&out.plaintext);
            }
        }
        let group = match self.load_group(inner, id) {
            Ok(g) => g,
            Err(e) => {
                return E2eeContent::Failed {
                    reason: e.to_string(),
                }
            }
        };
        // A Welcome for this device: its committer saw no leaf of it in the
        // group, so it joins from there (replacing a group it was removed
        // from, or one it started while another device's won).
        if body.welcome_devices.contains(&self.device_id) {
            if let Some(w) = &body.welcome {
                return self.join(inner, id, w);
            }
        }
        let Some(mut group) = group else {
            return E2eeContent::BeforeJoin;
        };
        let joined = inner
            .state
            .conversations
            .get(&id)
            .and_then(|c| c.joined_epoch)
            .unwrap_or(0);
        if body.epoch < joined {
            return E2eeContent::BeforeJoin;
        }
        let msg = match decode_message(&body.ciphertext) {
            Ok(msg) => msg,
            Err(reason) => return E2eeContent::Failed { reason },
        };
        let protocol: ProtocolMessage = match msg.try_into_protocol_message() {
            Ok(p) => p,
            Err(e) => {
                return E2eeContent::Failed {
                    reason: format!("not a group message: {e:?}"),
                }
            }
        };
        if protocol.group_id() != &group_id(id) {
            return E2eeContent::Failed {
                reason: "sent for another conversation's group".into(),
            };
        }
        let mine = group.epoch().as_u64();
        if body.mls == MlsKind::Commit && protocol.epoch().as_u64() != mine {
            // A commit for an epoch this device is not at: already applied
            // or never meant for this branch.
            return E2eeContent::Failed {
                reason: format!(
                    "a commit for epoch {} while this device is at epoch {mine}",
                    protocol.epoch().as_u64()
                ),
            };
        }
        let processed = match group.process_message(&inner.provider, protocol) {
            Ok(p) => p,
            Err(e) => {
                return E2eeContent::Failed {
                    reason: format!("cannot decrypt: {e}"),
                }
            }
        };
        // The MLS sender (signed) must be the user the server says sent it
        // (authenticated by its token): one member cannot pass another's
        // message off as their own, nor replay it under their name.
        let signer = BasicCredential::try_from(processed.credential().clone())
            .ok()
            .and_then(|c| roster::parse_identity(c.identity()));
        if signer.map(|(user, _)| user) != Some(m.sender_id) {
            return E2eeContent::Failed {
                reason: format!(
                    "signed by {} but sent by user {}: refused",
                    signer.map_or("an unknown member".to_owned(), |(u, d)| format!(
                        "user {u} (device {d})"
                    )),
                    m.sender_id
                ),
            };
        }
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                match serde_json::from_slice::<Value>(&app.into_bytes()) {
                    Ok(v) => plain_content(&v),
                    Err(_) => E2eeContent::Failed {
                        reason: "the decrypted message is not JSON".into(),
                    },
                }
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                if let Err(e) = group.merge_staged_commit(&inner.provider, *staged) {
                    return E2eeContent::Failed {
                        reason: format!("cannot apply the commit: {e:?}"),
                    };
                }
                if group.is_active() {
                    E2eeContent::Commit {
                        epoch: group.epoch().as_u64(),
                    }
                } else {
                    E2eeContent::Removed
                }
            }
            ProcessedMessageContent::ProposalMessage(p) => {
                match group.store_pending_proposal(inner.provider.storage(), *p) {
                    Ok(()) => E2eeContent::Proposal,
                    Err(e) => E2eeContent::Failed {
                        reason: format!("cannot keep the proposal: {e:?}"),
                    },
                }
            }
            _ => E2eeContent::Failed {
                reason: "external joins are not accepted".into(),
            },
        }
    }

    fn merge_own_commit(&self, inner: &mut Inner, id: ConversationId) -> E2eeContent {
        if let Some(cs) = inner.state.conversations.get_mut(&id) {
            cs.pending_commit = None;
        }
        let group = MlsGroup::load(inner.provider.storage(), &group_id(id));
        match group {
            Ok(Some(mut g)) => match g.merge_pending_commit(&inner.provider) {
                Ok(()) => E2eeContent::Commit {
                    epoch: g.epoch().as_u64(),
                },
                Err(e) => E2eeContent::Failed {
                    reason: format!("cannot apply this device's own commit: {e:?}"),
                },
            },
            Ok(None) => E2eeContent::Failed {
                reason: "this device's commit for a group it does not have".into(),
            },
            Err(e) => E2eeContent::Failed {
                reason: format!("storage: {e:?}"),
            },
        }
    }

    fn join(&self, inner: &mut Inner, id: ConversationId, welcome: &str) -> E2eeContent {
        let fail = |reason: String| E2eeContent::Failed { reason };
        let msg = match decode_message(welcome) {
            Ok(m) => m,
            Err(r) => return fail(r),
        };
        let MlsMessageBodyIn::Welcome(w) = msg.extract() else {
            return fail("the welcome is not an MLS Welcome".into());
        };
        // Staged first: a Welcome this device cannot open (forged, or made
        // for another device's KeyPackage) leaves its group as it was.
        let staged = match StagedWelcome::new_from_welcome(&inner.provider, &join_config(), w, None)
        {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot join from the welcome: {e}")),
        };
        // A group this device was removed from makes way for the new one.
        if let Ok(Some(mut old)) = MlsGroup::load(inner.provider.storage(), &group_id(id)) {
            let _ = old.delete(inner.provider.storage());
        }
        let group = match staged.into_group(&inner.provider) {
            Ok(g) => g,
            Err(e) => return fail(format!("cannot join from the welcome: {e}")),
        };
        if group.group_id() != &group_id(id) {
            let mut group = group;
            let _ = group.delete(inner.provider.storage());
            return fail("the welcome is for another conversation's group".into());
        }
        let epoch = group.epoch().as_u64();
        let cs = inner.state.conversations.entry(id).or_default();
        cs.joined_epoch = Some(epoch);
        cs.keys_fresh_at = Some(now_ms());
        E2eeContent::Joined { epoch }
    }
}

impl Client {
    /// A user's live devices and their registered keys (for safety numbers).
    pub async fn devices(&self, user: UserId) -> Result<Vec<confab_proto::e2ee::DeviceInfo>> {
        let list: DevicesResponse = self
            .call(
                Method::GET,
                &format!("/v1/users/{user}/devices"),
                &[],
                None::<&()>,
            )
            .await?;
        Ok(list.devices)
    }
}

/// The content of a decrypted application plaintext.
fn plain_content(v: &Value) -> E2eeContent {
    match (v.get("kind").and_then(Value::as_str), v.get("body")) {
        (Some(kind), Some(body)) => E2eeContent::Message {
            kind: kind.to_owned(),
            body: body.clone(),
        },
        _ => E2eeContent::Failed {
            reason: "the decrypted message has no kind and body".into(),
        },
    }
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
