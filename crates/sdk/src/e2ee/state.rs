//! What a device keeps of its encrypted conversations besides openmls's
//! own storage: how far it has processed each one, the plaintexts it
//! decrypted (an MLS message can be decrypted only once), and the sends
//! not yet acknowledged, so a crash loses nothing. All of it lives in one
//! file, written atomically with openmls's storage after every change.

use std::collections::{BTreeMap, HashMap};

use confab_proto::{ConversationId, Millis, Seq, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::provider::Snapshot;

/// One message of an encrypted conversation, as this device saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct E2eeMessage {
    /// Its seq.
    pub seq: Seq,
    /// Who sent it.
    pub sender_id: UserId,
    /// When it was committed.
    pub ts: Millis,
    /// What it is.
    pub content: E2eeContent,
}

/// What an encrypted conversation's message turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum E2eeContent {
    /// A decrypted message: `kind` (`text`, `image`, `voice`, `file`) and
    /// its body (media bodies carry the attachment's key).
    Message {
        /// The plain kind.
        kind: String,
        /// The plain body.
        body: Value,
    },
    /// A server notice (joins, leaves, …): never encrypted.
    Notice {
        /// The `system` body.
        body: Value,
    },
    /// A commit that moved the group to `epoch` (members or keys changed).
    Commit {
        /// The epoch after it.
        epoch: u64,
    },
    /// This device joined the group here (from a Welcome).
    Joined {
        /// The epoch it joined at.
        epoch: u64,
    },
    /// A commit removed this device: nothing after it can be decrypted.
    Removed,
    /// A proposal (kept for the next commit).
    Proposal,
    /// Sent before this device was in the group: it was never meant to
    /// read it.
    BeforeJoin,
    /// Could not be decrypted or applied; `reason` says why.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A send not yet acknowledged: sent again (same `client_msg_id`) after a
/// crash, re-encrypted if the epoch moved meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    pub conversation_id: ConversationId,
    pub client_msg_id: String,
    /// The application plaintext (JSON), for re-encryption.
    pub plaintext: Value,
    /// The `encrypted` body last sent.
    pub body: Value,
}

/// A commit of this device, staged in openmls, not yet acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingCommit {
    pub client_msg_id: String,
    pub body: Value,
}

/// Per encrypted conversation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConversationState {
    /// Every message up to here has been processed, in seq order.
    pub processed_seq: Seq,
    /// The epoch this device joined at (messages of earlier epochs were
    /// not meant for it).
    pub joined_epoch: Option<u64>,
    /// What was seen, by seq.
    pub messages: BTreeMap<Seq, E2eeMessage>,
    /// This device's commit in flight.
    pub pending_commit: Option<PendingCommit>,
    /// A member left or was removed on the server: their leaves should go.
    pub needs_reconcile: bool,
    /// When this device's leaf last got fresh keys (it created or joined
    /// the group, or committed a self-update), in ms since the Unix epoch:
    /// the key-update schedule counts from here.
    #[serde(default)]
    pub keys_fresh_at: Option<Millis>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// openmls's storage.
    pub storage: Snapshot,
    /// Encrypted conversations by id.
    pub conversations: HashMap<ConversationId, ConversationState>,
    /// Sends not yet acknowledged, by `client_msg_id`.
    pub outbox: BTreeMap<String, Outgoing>,
}
