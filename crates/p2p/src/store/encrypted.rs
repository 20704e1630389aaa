//! Encrypted conversations in the peer's store (issue 14): which
//! conversations are encrypted, the MLS state ([`crate::mls::Mls`]'s
//! snapshot), and what each `encrypted` envelope opened to. Envelopes stay
//! as they came (signed ciphertext, for catch-up and the mailbox); each is
//! opened once, its outcome written in the same transaction as the MLS
//! state it left, so a restart loses nothing and decrypts nothing twice.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{now_ms, Store, StoreError, StoredMessage};
use crate::envelope::{kind, Envelope};
use crate::mls::{Mls, Opened};

/// Tables of this module (created with the store's schema).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS encrypted_conversations(id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS mls_state(id INTEGER PRIMARY KEY CHECK (id = 1), snapshot BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS opened(
  conversation_id TEXT NOT NULL, sender TEXT NOT NULL, counter INTEGER NOT NULL,
  state TEXT NOT NULL, content TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(conversation_id, sender, counter));
CREATE TABLE IF NOT EXISTS mls_keys_at(conversation_id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS waiting_sends(
  client_msg_id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, peer TEXT NOT NULL,
  kind TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL);
";

/// How often the committer of an encrypted conversation updates its keys
/// (before its next send once this much time has passed).
pub const KEY_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A message for an encrypted direct conversation whose keys are not
/// there yet (the contact was offline): kept here, on this device only,
/// and sent encrypted once the contact's KeyPackage comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingSend {
    /// Its idempotency key (kept when it is sent).
    pub client_msg_id: String,
    /// The encrypted direct conversation.
    pub conversation_id: String,
    /// The contact whose keys it waits for.
    pub peer: String,
    /// Plain kind (`text`, …).
    pub kind: String,
    /// Body, JSON text.
    pub body: String,
    /// When it was written (ms since the epoch).
    pub created_ms: i64,
}

/// The id of the encrypted direct conversation between two devices: the
/// same on both, and not the plain one's.
pub fn encrypted_direct_conversation_id(a: &str, b: &str) -> String {
    use sha2::Digest;
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let digest = sha2::Sha256::digest(format!("e2ee\n{x}\n{y}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("dme-{hex}")
}

/// A history line of any conversation, encrypted ones decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The message; for an opened encrypted one, its plaintext kind and body.
    #[serde(flatten)]
    pub message: StoredMessage,
    /// It came encrypted.
    pub encrypted: bool,
    /// Not opened yet: what it waits for (a Welcome or a commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// It can never be opened: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl Shown {
    /// As one message line: plain and opened ones as they are; one this
    /// device cannot open (yet) as an `encrypted` message whose body says
    /// why: `{"waiting": reason}` or `{"unreadable": reason}`.
    pub fn into_message(self) -> StoredMessage {
        let mut message = self.message;
        let why = match (self.waiting, self.unreadable) {
            (Some(reason), _) => Some(("waiting", reason)),
            (None, Some(reason)) => Some(("unreadable", reason)),
            (None, None) if self.encrypted && message.kind == kind::ENCRYPTED => {
                Some(("waiting", "not opened yet".to_owned()))
            }
            (None, None) => None,
        };
        if let Some((state, reason)) = why {
            message.kind = kind::ENCRYPTED.to_owned();
            message.body = serde_json::json!({ state: reason }).to_string();
        }
        message
    }
}

/// What an opened application message holds: a plain envelope's kind and
/// body (body as JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plain {
    /// A plain kind (`text`, `image`, `voice`, `file`).
    pub kind: String,
    /// Its body (a JSON value).
    pub body: serde_json::Value,
}

impl Store {
    /// Whether a conversation is encrypted.
    pub fn is_encrypted(&self, conversation_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM encrypted_conversations WHERE id = ?1",
                [conversation_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Marks a conversation encrypted.
    pub fn mark_encrypted(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO encrypted_conversations(id) VALUES (?1)",
            [conversation_id],
        )?;
        Ok(())
    }

    /// The encrypted direct conversation with a contact, made if needed.
    pub fn encrypted_direct(&mut self, peer: &str) -> Result<String, StoreError> {
        let contact = self.find_contact(peer)?;
        let id = encrypted_direct_conversation_id(&self.me, &contact.peer_id);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO conversations(id, kind, title, admin, created_at) VALUES (?1, 'direct', '', '', ?2)",
            params![id, now_ms()],
        )?;
        for m in [&self.me, &contact.peer_id] {
            tx.execute(
                "INSERT OR IGNORE INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                params![id, m],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO encrypted_conversations(id) VALUES (?1)",
            [&id],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Before accepting an envelope: an envelope from a contact in the
    /// encrypted direct conversation with it makes that conversation here.
    pub(super) fn prepare_encrypted_direct(&mut self, env: &Envelope) -> Result<(), StoreError> {
        if env.conversation_id == encrypted_direct_conversation_id(&self.me, &env.sender)
            && self.find_contact(&env.sender).is_ok()
        {
            self.encrypted_direct(&env.sender)?;
        }
        Ok(())
    }

    /// The saved MLS state, if any.
    pub fn mls_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT snapshot FROM mls_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Saves the MLS state (after making a KeyPackage, a group or a commit).
    pub fn save_mls(&self, mls: &Mls) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO mls_state(id, snapshot) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot",
            [mls.snapshot()],
        )?;
        Ok(())
    }

    /// The MLS client of this device, with its saved state.
    pub fn mls(&self, key: &libp2p::identity::Keypair) -> Result<Mls, StoreError> {
        let snapshot = self.mls_snapshot()?;
        Mls::new(key, snapshot.as_deref()).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    /// Encrypts a plain message (`kind`, `body` as JSON text) and composes
    /// its `encrypted` envelope; the plaintext is kept as opened (a device
    /// cannot decrypt its own MLS messages).
    pub fn compose_encrypted(
        &mut self,
        key: &libp2p::identity::Keypair,
        mls: &mut Mls,
        conversation_id: &str,
        plain_kind: &str,
        body: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Envelope, StoreError> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| StoreError::Invalid(format!("message body: {e}")))?;
        let plain = serde_json::to_string(&Plain {
            kind: plain_kind.to_owned(),
            body: value,
        })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let sealed = mls
            .encrypt(conversation_id, plain.as_bytes())
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.compose_control(key, mls, conversation_id, &sealed, &plain, client_msg_id)
    }

    /// Composes an `encrypted` envelope of an MLS body this device made
    /// (`shown` is what it opens to here: a plaintext, or empty for a
    /// Welcome or commit) and saves the MLS state with it.
    pub fn compose_control(
        &mut self,
        key: &libp2p::identity::Keypair,
        mls: &Mls,
        conversation_id: &str,
        body: &crate::mls::MlsBody,
        shown: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Envelope, StoreError> {
        let text = serde_json::to_string(body).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let env = self.compose(key, conversation_id, kind::ENCRYPTED, &text, client_msg_id)?;
        let state = if shown.is_empty() {
            "control"
        } else {
            "message"
        };
        self.record(&env, state, shown, "", mls)?;
        Ok(env)
    }

    fn record(
        &mut self,
        env: &Envelope,
        state: &str,
        content: &str,
        reason: &str,
        mls: &Mls,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO opened(conversation_id, sender, counter, state, content, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(conversation_id, sender, counter) DO UPDATE SET
               state = excluded.state, content = excluded.content, reason = excluded.reason",
            params![
                env.conversation_id,
                env.sender,
                i64::try_from(env.counter).unwrap_or(i64::MAX),
                state,
                content,
                reason
            ],
        )?;
        tx.execute(
            "INSERT INTO mls_state(id, snapshot) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot",
            [mls.snapshot()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Opens every `encrypted` envelope of the conversation not opened yet
    /// (or waiting), in the order members show, again while a commit or
    /// Welcome makes more openable. Answers the messages newly opened, and
    /// those found unreadable (marked so).
    pub fn open_encrypted(
        &mut self,
        mls: &mut Mls,
        conversation_id: &str,
    ) -> Result<Vec<Shown>, StoreError> {
        let mut out = Vec::new();
        loop {
            let todo: Vec<String> = {
                let mut stmt = self.conn.prepare(
                    "SELECT m.envelope FROM messages m LEFT JOIN opened o
                       ON o.conversation_id = m.conversation_id AND o.sender = m.sender
                      AND o.counter = m.counter
                     WHERE m.conversation_id = ?1 AND m.kind = 'encrypted'
                       AND (o.state IS NULL OR o.state = 'waiting')
                     ORDER BY m.lamport, m.sender, m.counter",
                )?;
                let rows = stmt.query_map([conversation_id], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut advanced = false;
            for text in todo {
                let Ok(env) = serde_json::from_str::<Envelope>(&text) else {
                    continue;
                };
                let (state, content, reason) = if env.sender == self.me {
                    // Its own envelope without a kept plaintext (a store
                    // from before): nothing can open it here.
                    (
                        "unreadable",
                        String::new(),
                        "sent by this device".to_owned(),
                    )
                } else {
                    match mls.open(conversation_id, &env.sender, &env.body) {
                        Opened::Message(bytes) => match serde_json::from_slice::<Plain>(&bytes) {
                            Ok(p) if kind::ALL.contains(&p.kind.as_str()) => (
                                "message",
                                String::from_utf8_lossy(&bytes).into_owned(),
                                String::new(),
                            ),
                            _ => (
                                "unreadable",
                                String::new(),
                                "the plaintext is not a message".to_owned(),
                            ),
                        },
                        Opened::Commit { .. } | Opened::Joined { .. } => {
                            advanced = true;
                            ("control", String::new(), String::new())
                        }
                        Opened::Nothing => ("control", String::new(), String::new()),
                        Opened::NotYet(why) => ("waiting", String::new(), why),
                        Opened::Unreadable(why) => ("unreadable", String::new(), why),
                    }
                };
                self.record(&env, state, &content, &reason, mls)?;
                let application =
                    env.body_json().get("mls").and_then(|v| v.as_str()) == Some("application");
                if state == "message" || (state == "unreadable" && application) {
                    out.extend(self.shown_one(&env)?);
                }
            }
            if !advanced {
                return Ok(out);
            }
        }
    }

    /// One envelope as shown (see [`Store::shown_history`]); `None` for a
    /// Welcome or commit, or one not stored.
    pub fn shown_one(&self, env: &Envelope) -> Result<Option<Shown>, StoreError> {
        let Some(message) = self.message_at(&env.conversation_id, &env.sender, env.counter)? else {
            return Ok(None);
        };
        self.shown(message)
    }

    /// History as shown: encrypted messages decrypted (or marked waiting or
    /// unreadable); Welcomes and commits are not shown.
    pub fn shown_history(&self, conversation_id: &str) -> Result<Vec<Shown>, StoreError> {
        let mut out = Vec::new();
        for message in self.history(conversation_id)? {
            out.extend(self.shown(message)?);
        }
        Ok(out)
    }

    /// A stored message as shown: plain as it is; encrypted opened, or
    /// marked waiting or unreadable; `None` for a Welcome or commit.
    fn shown(&self, mut message: StoredMessage) -> Result<Option<Shown>, StoreError> {
        if message.kind != kind::ENCRYPTED {
            return Ok(Some(Shown {
                message,
                encrypted: false,
                waiting: None,
                unreadable: None,
            }));
        }
        let row: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT state, content, reason FROM opened
                 WHERE conversation_id = ?1 AND sender = ?2 AND counter = ?3",
                params![
                    message.conversation_id,
                    message.sender,
                    i64::try_from(message.counter).unwrap_or(i64::MAX)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (state, content, reason) =
            row.unwrap_or(("waiting".into(), String::new(), "not opened yet".into()));
        let mut shown = Shown {
            message: message.clone(),
            encrypted: true,
            waiting: None,
            unreadable: None,
        };
        match state.as_str() {
            "control" => return Ok(None),
            "message" => match serde_json::from_str::<Plain>(&content) {
                Ok(p) => {
                    message.kind = p.kind;
                    message.body = p.body.to_string();
                    shown.message = message;
                }
                Err(_) => shown.unreadable = Some("the kept plaintext is unreadable".into()),
            },
            "waiting" => shown.waiting = Some(reason),
            _ => shown.unreadable = Some(reason),
        }
        Ok(Some(shown))
    }
}

/// The device's own MLS client kept in the store (what the node uses).
impl Store {
    /// Loads this device's MLS client (its saved state) into the store.
    pub fn enable_mls(&mut self, key: &libp2p::identity::Keypair) -> Result<(), StoreError> {
        self.mls = Some(self.mls(key)?);
        Ok(())
    }

    fn with_mls<T>(
        &mut self,
        f: impl FnOnce(&mut Store, &mut Mls) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut mls = self
            .mls
            .take()
            .ok_or_else(|| StoreError::Invalid("MLS is not enabled on this store".into()))?;
        let out = f(self, &mut mls);
        self.mls = Some(mls);
        out
    }

    /// The answer to a `/confab/kp/1` request: a fresh KeyPackage, its
    /// private part saved before it leaves.
    pub fn answer_key_package(&mut self) -> Result<String, StoreError> {
        self.with_mls(|s, mls| {
            let kp = mls
                .key_package()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            s.save_mls(mls)?;
            Ok(kp)
        })
    }

    /// The epoch of this device's MLS group of the conversation, if any.
    pub fn mls_epoch(&self, conversation_id: &str) -> Option<u64> {
        self.mls.as_ref().and_then(|m| m.epoch(conversation_id))
    }

    /// Whether this device is in the MLS group of the conversation.
    pub fn has_mls_group(&self, conversation_id: &str) -> bool {
        self.mls
            .as_ref()
            .is_some_and(|m| m.epoch(conversation_id).is_some())
    }

    /// Creates the MLS group of an encrypted conversation this device
    /// administers with the members' KeyPackages `(PeerId, base64)` and
    /// composes the Welcome envelope (queued to every member).
    pub fn start_encrypted(
        &mut self,
        key: &libp2p::identity::Keypair,
        conversation_id: &str,
        key_packages: &[(String, String)],
    ) -> Result<Option<Envelope>, StoreError> {
        self.mark_encrypted(conversation_id)?;
        if self.has_mls_group(conversation_id) {
            // Made already (the contact asked first): one group only.
            return Ok(None);
        }
        self.set_keys_at(conversation_id)?;
        self.with_mls(|s, mls| {
            let welcome = mls
                .create_group(conversation_id, key_packages)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            match welcome {
                Some(w) => s
                    .compose_control(key, mls, conversation_id, &w, "", None)
                    .map(Some),
                None => {
                    s.save_mls(mls)?;
                    Ok(None)
                }
            }
        })
    }

    /// A contact with a higher PeerId asks this device to make the group of
    /// their encrypted direct conversation with its KeyPackage (the lower
    /// PeerId makes it: two makers would fork it). Answers whether it was
    /// made now (false: it existed; its Welcome is on its way).
    pub fn start_direct_for(
        &mut self,
        key: &libp2p::identity::Keypair,
        asker: &str,
        key_package: &str,
    ) -> Result<bool, StoreError> {
        self.find_contact(asker)?;
        if self.me.as_str() > asker {
            return Err(StoreError::Invalid(
                "the lower PeerId makes a direct conversation's group: make it yourself".into(),
            ));
        }
        let conv = self.encrypted_direct(asker)?;
        if self.has_mls_group(&conv) {
            return Ok(false);
        }
        let made =
            self.start_encrypted(key, &conv, &[(asker.to_owned(), key_package.to_owned())])?;
        Ok(made.is_some())
    }

    /// The admin's membership change of an encrypted group: one MLS
    /// commit adding the peers whose KeyPackages are given and removing
    /// `remove` (PeerIds), with the Welcome for the added ones, composed
    /// right after the `group_change` (the admin's counter orders them).
    pub fn commit_change(
        &mut self,
        key: &libp2p::identity::Keypair,
        conversation_id: &str,
        add: &[(String, String)],
        remove: &[String],
    ) -> Result<Envelope, StoreError> {
        self.with_mls(|s, mls| {
            let commit = mls
                .change(conversation_id, add, remove)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let env = s.compose_control(key, mls, conversation_id, &commit, "", None)?;
            s.set_keys_at(conversation_id)?;
            Ok(env)
        })
    }

    /// Encrypts and composes a message with the store's MLS client.
    pub fn send_encrypted(
        &mut self,
        key: &libp2p::identity::Keypair,
        conversation_id: &str,
        plain_kind: &str,
        body: &str,
    ) -> Result<Envelope, StoreError> {
        self.send_encrypted_with_id(key, conversation_id, plain_kind, body, None)
    }

    /// [`Store::send_encrypted`] with the caller's idempotency key.
    pub fn send_encrypted_with_id(
        &mut self,
        key: &libp2p::identity::Keypair,
        conversation_id: &str,
        plain_kind: &str,
        body: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Envelope, StoreError> {
        self.with_mls(|s, mls| {
            s.update_keys_if_due(key, mls, conversation_id)?;
            s.compose_encrypted(key, mls, conversation_id, plain_kind, body, client_msg_id)
        })
    }

    /// Sets how often this device, where it commits, updates its keys
    /// ([`KEY_UPDATE_INTERVAL`] by default).
    pub fn set_key_update_interval(&mut self, every: std::time::Duration) {
        self.key_update_every = every;
    }

    fn keys_at(&self, conversation_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT at_ms FROM mls_keys_at WHERE conversation_id = ?1",
                [conversation_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_keys_at(&self, conversation_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO mls_keys_at(conversation_id, at_ms) VALUES (?1, ?2)
             ON CONFLICT(conversation_id) DO UPDATE SET at_ms = excluded.at_ms",
            params![conversation_id, now_ms()],
        )?;
        Ok(())
    }

    /// Before a send: the committer of the group whose keys are older than
    /// the interval makes a key-update commit, sent ahead of the message
    /// (its counter orders them).
    fn update_keys_if_due(
        &mut self,
        key: &libp2p::identity::Keypair,
        mls: &mut Mls,
        conversation_id: &str,
    ) -> Result<(), StoreError> {
        if !mls.is_committer(conversation_id) {
            return Ok(());
        }
        let Some(at) = self.keys_at(conversation_id)? else {
            // A group made before keys were dated: from now on.
            return self.set_keys_at(conversation_id);
        };
        let every = i64::try_from(self.key_update_every.as_millis()).unwrap_or(i64::MAX);
        if now_ms().saturating_sub(at) < every {
            return Ok(());
        }
        let commit = mls
            .update_keys(conversation_id)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.compose_control(key, mls, conversation_id, &commit, "", None)?;
        self.set_keys_at(conversation_id)
    }

    /// Keeps a message until the keys of `peer` come (see [`WaitingSend`]).
    pub fn queue_waiting(
        &self,
        conversation_id: &str,
        peer: &str,
        plain_kind: &str,
        body: &str,
        client_msg_id: &str,
    ) -> Result<(), StoreError> {
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|e| StoreError::Invalid(format!("message body: {e}")))?;
        self.conn.execute(
            "INSERT OR IGNORE INTO waiting_sends(client_msg_id, conversation_id, peer, kind, body, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![client_msg_id, conversation_id, peer, plain_kind, body, now_ms()],
        )?;
        Ok(())
    }

    /// The messages waiting for keys, oldest first; only `peer`'s when given.
    pub fn waiting_sends(&self, peer: Option<&str>) -> Result<Vec<WaitingSend>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT client_msg_id, conversation_id, peer, kind, body, created_ms FROM waiting_sends
             WHERE ?1 IS NULL OR peer = ?1 ORDER BY created_ms, rowid",
        )?;
        let rows = stmt.query_map([peer], |r| {
            Ok(WaitingSend {
                client_msg_id: r.get(0)?,
                conversation_id: r.get(1)?,
                peer: r.get(2)?,
                kind: r.get(3)?,
                body: r.get(4)?,
                created_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The envelope this device sent with that id, if any.
    pub fn own_envelope(&self, client_msg_id: &str) -> Result<Option<Envelope>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT envelope FROM messages WHERE sender = ?1 AND client_msg_id = ?2",
                params![self.me, client_msg_id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Invalid(format!("stored envelope: {e}")))
        })
        .transpose()
    }

    /// Sends one waiting message encrypted (the conversation's group must
    /// exist) and forgets it; a send of the same id again is idempotent.
    pub fn send_waiting(
        &mut self,
        key: &libp2p::identity::Keypair,
        waiting: &WaitingSend,
    ) -> Result<Envelope, StoreError> {
        let env = self.send_encrypted_with_id(
            key,
            &waiting.conversation_id,
            &waiting.kind,
            &waiting.body,
            Some(&waiting.client_msg_id),
        )?;
        self.conn.execute(
            "DELETE FROM waiting_sends WHERE client_msg_id = ?1",
            [&waiting.client_msg_id],
        )?;
        Ok(env)
    }

    /// Opens what can be opened in the conversation with the store's MLS
    /// client (after accepting an `encrypted` envelope).
    pub fn open_pending(&mut self, conversation_id: &str) -> Result<Vec<Shown>, StoreError> {
        self.mark_encrypted(conversation_id)?;
        self.with_mls(|s, mls| s.open_encrypted(mls, conversation_id))
    }
}

#[cfg(test)]
mod tests;
