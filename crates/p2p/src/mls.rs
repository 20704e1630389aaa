//! MLS (RFC 9420, openmls) for encrypted P2P conversations (issue 14):
//! the bodies of `encrypted` envelopes (docs/protocol.md, "P2P", "Encrypted
//! conversations").
//!
//! The device key *is* the MLS signature key: the libp2p Ed25519 key pair
//! of the peer, its credential a `BasicCredential` whose identity is the
//! PeerId (base58). Ciphersuite `0x0001`, as in the server mode. [`Mls`] is
//! sans-IO: it makes and opens envelope bodies; its whole state (openmls's
//! storage, private keys included) is [`Mls::snapshot`], which the peer's
//! store keeps in its SQLite file ([`crate::store::Store::save_mls`]).
//!
//! Bodies (JSON, tagged by `mls`):
//! - `{"mls":"welcome","welcome":b64,"for":[PeerId]}`: the Welcome of a
//!   new group or of added members.
//! - `{"mls":"commit","epoch":N,"commit":b64,"welcome"?:b64,"for":[PeerId]}`:
//!   a membership change, from the group's admin (its only committer).
//! - `{"mls":"application","epoch":N,"ciphertext":b64}`: a message; its
//!   plaintext is the JSON `{"kind","body"}` of a plain envelope.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libp2p::identity::Keypair;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, GroupId, KeyPackage, KeyPackageIn,
    LeafNodeIndex, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, ProcessedMessageContent, ProtocolMessage, ProtocolVersion,
    SignatureScheme, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use tls_codec::{Deserialize as _, Serialize as _};

/// The one ciphersuite: `0x0001`, as in the server mode.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// What went wrong making or opening an MLS body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlsError {
    /// The device key is not Ed25519.
    #[error("the device key is not Ed25519")]
    NotEd25519,
    /// openmls refused (the reason is its error).
    #[error("mls: {0}")]
    Mls(String),
    /// This device is not in the conversation's group.
    #[error("this device is not in the encryption group of {0}")]
    NoGroup(String),
    /// A KeyPackage is invalid or not the named peer's.
    #[error("bad key package from {0}: {1}")]
    BadKeyPackage(String, String),
}

fn mls_err(what: &str, e: impl std::fmt::Debug) -> MlsError {
    MlsError::Mls(format!("{what}: {e:?}"))
}

/// An `encrypted` envelope's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mls", rename_all = "snake_case")]
pub enum MlsBody {
    /// A Welcome for the peers in `for`.
    Welcome {
        /// The MLS Welcome, base64.
        welcome: String,
        /// Who it is for.
        #[serde(rename = "for")]
        for_peers: Vec<String>,
    },
    /// A commit by the admin (and a Welcome for the peers it adds).
    Commit {
        /// The epoch the commit was made in.
        epoch: u64,
        /// The MLS commit, base64.
        commit: String,
        /// The Welcome for added peers, base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<String>,
        /// Who the Welcome is for.
        #[serde(rename = "for", default)]
        for_peers: Vec<String>,
    },
    /// An application message.
    Application {
        /// The epoch it was encrypted in.
        epoch: u64,
        /// The MLS PrivateMessage, base64.
        ciphertext: String,
    },
}

/// What opening an `encrypted` body did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An application message: its plaintext.
    Message(Vec<u8>),
    /// A commit applied: the group is now at `epoch`.
    Commit {
        /// The new epoch.
        epoch: u64,
    },
    /// This device joined from a Welcome, at `epoch`.
    Joined {
        /// The epoch joined at.
        epoch: u64,
    },
    /// A body not meant for this device (a Welcome for others, a commit
    /// removing this device): nothing to show.
    Nothing,
    /// It needs what has not arrived yet (a Welcome, or a commit for an
    /// earlier epoch): keep it and open it again later.
    NotYet(String),
    /// It can never be opened: the reason.
    Unreadable(String),
}

/// Crypto and storage for openmls.
#[derive(Default)]
struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// One device's MLS client for its encrypted P2P conversations.
pub struct Mls {
    provider: Provider,
    signer: SignatureKeyPair,
    me: String,
}

impl std::fmt::Debug for Mls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mls").field("me", &self.me).finish()
    }
}

/// The MLS group id of a conversation.
fn group_id(conversation_id: &str) -> GroupId {
    GroupId::from_slice(format!("confab-p2p:{conversation_id}").as_bytes())
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

fn encode(msg: &MlsMessageOut) -> Result<String, MlsError> {
    Ok(B64.encode(
        msg.tls_serialize_detached()
            .map_err(|e| mls_err("cannot encode an MLS message", e))?,
    ))
}

fn decode(b64: &str) -> Result<MlsMessageIn, String> {
    let bytes = B64
        .decode(b64)
        .map_err(|_| "the MLS message is not base64".to_owned())?;
    MlsMessageIn::tls_deserialize_exact(bytes.as_slice())
        .map_err(|e| format!("not an MLS message: {e:?}"))
}

/// The raw Ed25519 public key of a PeerId (it is inlined in the id).
fn peer_public_key(peer: &str) -> Option<Vec<u8>> {
    let id: libp2p::PeerId = peer.parse().ok()?;
    let key = libp2p::identity::PublicKey::try_decode_protobuf(id.to_bytes().get(2..)?).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes().to_vec())
}

impl Mls {
    /// The MLS client of the device with libp2p key `key`, holding what
    /// `snapshot` saved (none: a fresh one).
    pub fn new(key: &Keypair, snapshot: Option<&[u8]>) -> Result<Mls, MlsError> {
        let me = key.public().to_peer_id().to_base58();
        let pair = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| MlsError::NotEd25519)?;
        let bytes = pair.to_bytes();
        let signer = SignatureKeyPair::from_raw(SignatureScheme::ED25519, bytes[..32].to_vec(), {
            bytes[32..].to_vec()
        });
        let provider = Provider::default();
        if let Some(snapshot) = snapshot {
            let pairs: Vec<(String, String)> = serde_json::from_slice(snapshot)
                .map_err(|e| mls_err("the saved MLS state is unreadable", e))?;
            if let Ok(mut values) = provider.storage.values.write() {
                for (k, v) in pairs {
                    if let (Ok(k), Ok(v)) = (B64.decode(k), B64.decode(v)) {
                        values.insert(k, v);
                    }
                }
            }
        }
        Ok(Mls {
            provider,
            signer,
            me,
        })
    }

    /// Everything openmls stored (private keys included), to keep in the
    /// peer's store: JSON `[[key_b64, value_b64], …]`, sorted.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut pairs: Vec<(String, String)> = match self.provider.storage.values.read() {
            Ok(values) => values
                .iter()
                .map(|(k, v)| (B64.encode(k), B64.encode(v)))
                .collect(),
            Err(_) => Vec::new(),
        };
        pairs.sort();
        serde_json::to_vec(&pairs).unwrap_or_default()
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.me.clone().into_bytes()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn group(&self, conversation_id: &str) -> Result<Option<MlsGroup>, MlsError> {
        MlsGroup::load(self.provider.storage(), &group_id(conversation_id))
            .map_err(|e| mls_err("storage", e))
    }

    /// The epoch of this device's group for the conversation, if it has one.
    pub fn epoch(&self, conversation_id: &str) -> Option<u64> {
        self.group(conversation_id)
            .ok()
            .flatten()
            .filter(MlsGroup::is_active)
            .map(|g| g.epoch().as_u64())
    }

    /// A fresh KeyPackage (base64), answered on `/confab/kp/1`; its private
    /// part stays in this client's storage (save the snapshot before
    /// answering).
    pub fn key_package(&self) -> Result<String, MlsError> {
        let bundle = KeyPackage::builder()
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential())
            .map_err(|e| mls_err("cannot make a key package", e))?;
        Ok(B64.encode(
            bundle
                .key_package()
                .tls_serialize_detached()
                .map_err(|e| mls_err("cannot encode a key package", e))?,
        ))
    }

    /// Checks a KeyPackage that `peer` answered: valid, and its leaf is
    /// `peer` (credential identity and signature key).
    fn check_key_package(&self, peer: &str, b64: &str) -> Result<KeyPackage, MlsError> {
        let bad = |why: &str| MlsError::BadKeyPackage(peer.to_owned(), why.to_owned());
        let bytes = B64.decode(b64).map_err(|_| bad("not base64"))?;
        let kp = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
            .map_err(|_| bad("not a key package"))?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| bad(&format!("invalid: {e:?}")))?;
        let leaf = kp.leaf_node();
        let identity = BasicCredential::try_from(leaf.credential().clone())
            .map(|c| c.identity().to_vec())
            .map_err(|_| bad("not a basic credential"))?;
        if identity != peer.as_bytes() {
            return Err(bad("its credential names another peer"));
        }
        if Some(leaf.signature_key().as_slice().to_vec()) != peer_public_key(peer) {
            return Err(bad("its signature key is not the peer's key"));
        }
        Ok(kp)
    }

    /// Creates the group of a conversation (this device is its admin) with
    /// the peers whose KeyPackages are given, in one commit. Answers the
    /// Welcome body to send (none when alone).
    pub fn create_group(
        &mut self,
        conversation_id: &str,
        key_packages: &[(String, String)],
    ) -> Result<Option<MlsBody>, MlsError> {
        let packages = key_packages
            .iter()
            .map(|(peer, kp)| self.check_key_package(peer, kp))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(mut old) = self.group(conversation_id)? {
            old.delete(self.provider.storage())
                .map_err(|e| mls_err("storage", e))?;
        }
        let mut group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            group_id(conversation_id),
            self.credential(),
        )
        .map_err(|e| mls_err("cannot create the group", e))?;
        if packages.is_empty() {
            return Ok(None);
        }
        let (_commit, welcome, _info) = group
            .add_members(&self.provider, &self.signer, &packages)
            .map_err(|e| mls_err("cannot add the members", e))?;
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| mls_err("cannot apply the commit", e))?;
        Ok(Some(MlsBody::Welcome {
            welcome: encode(&welcome)?,
            for_peers: key_packages.iter().map(|(p, _)| p.clone()).collect(),
        }))
    }

    /// A membership change by the admin: one commit adding the peers whose
    /// KeyPackages are given and removing `remove`; applied here at once.
    pub fn change(
        &mut self,
        conversation_id: &str,
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<MlsBody, MlsError> {
        self.commit(conversation_id, add, remove, false)
    }

    /// Whether this device commits in the conversation's group: the one at
    /// leaf 0, who made the group (a group's admin; in a direct
    /// conversation, the lower PeerId). Only it commits, so that members
    /// never fork.
    pub fn is_committer(&self, conversation_id: &str) -> bool {
        self.group(conversation_id)
            .ok()
            .flatten()
            .filter(MlsGroup::is_active)
            .is_some_and(|g| g.own_leaf_index() == LeafNodeIndex::new(0))
    }

    /// A key update by the committer: a commit with fresh keys for its
    /// leaf and a new path to the root (new epoch secrets for everyone),
    /// applied here at once.
    pub fn update_keys(&mut self, conversation_id: &str) -> Result<MlsBody, MlsError> {
        if !self.is_committer(conversation_id) {
            return Err(MlsError::Mls(format!(
                "only the member who made the group of {conversation_id} commits"
            )));
        }
        self.commit(conversation_id, &[], &[], true)
    }

    /// One commit (adds, removals, and a fresh path when `self_update`),
    /// merged here; its body with the Welcome for the added peers.
    fn commit(
        &mut self,
        conversation_id: &str,
        add: &[(String, String)],
        remove: &[String],
        self_update: bool,
    ) -> Result<MlsBody, MlsError> {
        let packages = add
            .iter()
            .map(|(peer, kp)| self.check_key_package(peer, kp))
            .collect::<Result<Vec<_>, _>>()?;
        let mut group = self
            .group(conversation_id)?
            .ok_or_else(|| MlsError::NoGroup(conversation_id.to_owned()))?;
        let removals: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| {
                BasicCredential::try_from(m.credential.clone())
                    .map(|c| remove.iter().any(|r| r.as_bytes() == c.identity()))
                    .unwrap_or(false)
            })
            .map(|m| m.index)
            .collect();
        let epoch = group.epoch().as_u64();
        let bundle = group
            .commit_builder()
            .propose_adds(packages)
            .propose_removals(removals)
            .force_self_update(self_update)
            .load_psks(self.provider.storage())
            .map_err(|e| mls_err("commit", e))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(|e| mls_err("commit", e))?
            .stage_commit(&self.provider)
            .map_err(|e| mls_err("commit", e))?;
        let (commit, welcome, _info) = bundle.into_messages();
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| mls_err("cannot apply the commit", e))?;
        Ok(MlsBody::Commit {
            epoch,
            commit: encode(&commit)?,
            welcome: welcome.as_ref().map(encode).transpose()?,
            for_peers: if welcome.is_some() {
                add.iter().map(|(p, _)| p.clone()).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Encrypts a plaintext for the conversation's group.
    pub fn encrypt(
        &mut self,
        conversation_id: &str,
        plaintext: &[u8],
    ) -> Result<MlsBody, MlsError> {
        let mut group = self
            .group(conversation_id)?
            .filter(MlsGroup::is_active)
            .ok_or_else(|| MlsError::NoGroup(conversation_id.to_owned()))?;
        let epoch = group.epoch().as_u64();
        let msg = group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(|e| mls_err("cannot encrypt", e))?;
        Ok(MlsBody::Application {
            epoch,
            ciphertext: encode(&msg)?,
        })
    }

    /// Opens an `encrypted` envelope's body sent by `signer` (the
    /// envelope's verified sender) in the conversation. MLS senders must be
    /// the envelope's signer.
    /// A body that cannot be opened changes nothing (a forged Welcome does
    /// not use up the KeyPackage the real one needs).
    pub fn open(&mut self, conversation_id: &str, signer: &str, body: &str) -> Opened {
        let saved = self.provider.storage.values.read().map(|v| v.clone()).ok();
        let opened = self.open_inner(conversation_id, signer, body);
        if matches!(opened, Opened::Unreadable(_) | Opened::NotYet(_)) {
            if let (Some(saved), Ok(mut values)) = (saved, self.provider.storage.values.write()) {
                *values = saved;
            }
        }
        opened
    }

    fn open_inner(&mut self, conversation_id: &str, signer: &str, body: &str) -> Opened {
        let body: MlsBody = match serde_json::from_str(body) {
            Ok(b) => b,
            Err(e) => return Opened::Unreadable(format!("not an MLS body: {e}")),
        };
        match body {
            MlsBody::Welcome { welcome, for_peers } => {
                if !for_peers.contains(&self.me) {
                    return Opened::Nothing;
                }
                self.join(conversation_id, signer, &welcome)
            }
            MlsBody::Commit {
                epoch,
                commit,
                welcome,
                for_peers,
            } => {
                if for_peers.contains(&self.me) {
                    if let Some(w) = welcome {
                        return self.join(conversation_id, signer, &w);
                    }
                }
                self.process(conversation_id, signer, epoch, &commit, true)
            }
            MlsBody::Application { epoch, ciphertext } => {
                self.process(conversation_id, signer, epoch, &ciphertext, false)
            }
        }
    }

    fn join(&mut self, conversation_id: &str, signer: &str, welcome: &str) -> Opened {
        let msg = match decode(welcome) {
            Ok(m) => m,
            Err(r) => return Opened::Unreadable(r),
        };
        let MlsMessageBodyIn::Welcome(w) = msg.extract() else {
            return Opened::Unreadable("the welcome is not an MLS Welcome".into());
        };
        // A group this device was removed from makes way for the new one
        // (openmls refuses a Welcome while the old one is stored); a
        // Welcome that fails below restores it ([`Mls::open`]).
        if let Ok(Some(mut old)) = self.group(conversation_id) {
            let _ = old.delete(self.provider.storage());
        }
        let staged = match StagedWelcome::new_from_welcome(&self.provider, &join_config(), w, None)
        {
            Ok(s) => s,
            Err(e) => return Opened::Unreadable(format!("cannot join from the welcome: {e}")),
        };
        // The Welcome must come from the member who made the commit.
        let from_signer = staged
            .welcome_sender()
            .ok()
            .and_then(|l| BasicCredential::try_from(l.credential().clone()).ok())
            .is_some_and(|c| c.identity() == signer.as_bytes());
        if !from_signer {
            return Opened::Unreadable("the welcome was not made by its envelope's signer".into());
        }
        let group = match staged.into_group(&self.provider) {
            Ok(g) => g,
            Err(e) => return Opened::Unreadable(format!("cannot join from the welcome: {e}")),
        };
        if group.group_id() != &group_id(conversation_id) {
            let mut group = group;
            let _ = group.delete(self.provider.storage());
            return Opened::Unreadable("the welcome is for another conversation".into());
        }
        Opened::Joined {
            epoch: group.epoch().as_u64(),
        }
    }

    fn process(
        &mut self,
        conversation_id: &str,
        signer: &str,
        epoch: u64,
        b64: &str,
        is_commit: bool,
    ) -> Opened {
        let msg = match decode(b64) {
            Ok(m) => m,
            Err(r) => return Opened::Unreadable(r),
        };
        let protocol: ProtocolMessage = match msg.try_into_protocol_message() {
            Ok(p) => p,
            Err(e) => return Opened::Unreadable(format!("not a group message: {e:?}")),
        };
        if protocol.group_id() != &group_id(conversation_id) {
            return Opened::Unreadable("sent for another conversation's group".into());
        }
        if protocol.epoch().as_u64() != epoch {
            return Opened::Unreadable("the body's epoch is not the message's".into());
        }
        let mut group = match self.group(conversation_id) {
            Ok(Some(g)) if g.is_active() => g,
            Ok(_) => return Opened::NotYet("not in the group yet (waiting for keys)".into()),
            Err(e) => return Opened::Unreadable(e.to_string()),
        };
        let mine = group.epoch().as_u64();
        if epoch > mine {
            return Opened::NotYet(format!(
                "for epoch {epoch}; this device is at epoch {mine} (waiting for keys)"
            ));
        }
        if is_commit && epoch < mine {
            return Opened::Nothing;
        }
        let processed = match group.process_message(&self.provider, protocol) {
            Ok(p) => p,
            Err(e) => return Opened::Unreadable(format!("cannot decrypt: {e}")),
        };
        let sender_ok = BasicCredential::try_from(processed.credential().clone())
            .is_ok_and(|c| c.identity() == signer.as_bytes());
        if !sender_ok {
            return Opened::Unreadable(format!(
                "the MLS sender is not the envelope's signer {signer}"
            ));
        }
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Opened::Message(app.into_bytes()),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                if let Err(e) = group.merge_staged_commit(&self.provider, *staged) {
                    return Opened::Unreadable(format!("cannot apply the commit: {e:?}"));
                }
                if group.is_active() {
                    Opened::Commit {
                        epoch: group.epoch().as_u64(),
                    }
                } else {
                    Opened::Nothing
                }
            }
            _ => Opened::Unreadable("only commits and application messages are accepted".into()),
        }
    }
}

#[cfg(test)]
mod tests;
