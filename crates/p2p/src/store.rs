//! The peer's own SQLite file: contacts, conversations and members,
//! messages (signed envelopes), per-sender cursors, the outbox and files.
//! Every accepted envelope is committed (WAL, `synchronous=FULL`) before
//! the caller acks it.
//!
//! [`Store`] is synchronous; [`SharedStore`] runs its calls on Tokio's
//! blocking pool behind one mutex, so the swarm's event loop never waits on
//! the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use libp2p::PeerId;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::envelope::{kind, Draft, Envelope, Refusal};
use crate::ordering::{Lamport, SenderProgress};

/// File name of the store inside the data dir.
pub const STORE_FILE: &str = "p2p.sqlite";

/// The most envelopes one catch-up answer carries.
pub const SYNC_PAGE: usize = 256;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("p2p store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The envelope was refused (stored nowhere).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No such contact or conversation.
    #[error("{0}")]
    NotFound(String),
    /// A rule of the caller's request was broken.
    #[error("{0}")]
    Invalid(String),
    /// The blocking task died.
    #[error("p2p store task failed: {0}")]
    Task(String),
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// PeerId (base58).
    pub peer_id: String,
    /// Display name.
    pub name: String,
    /// Known addresses (multiaddrs).
    pub addrs: Vec<String>,
    /// Relay address, if any.
    pub relay: Option<String>,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Id.
    pub id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// Group title (empty for direct).
    pub title: String,
    /// Group admin PeerId (empty for direct).
    pub admin: String,
    /// Member PeerIds, self included.
    pub members: Vec<String>,
}

/// A stored message, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Conversation.
    pub conversation_id: String,
    /// Sender PeerId.
    pub sender: String,
    /// Sender counter.
    pub counter: u64,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Lamport time.
    pub lamport: u64,
    /// Kind.
    pub kind: String,
    /// Body (JSON text).
    pub body: String,
    /// How it arrived: `local`, `direct`, `relayed`, `sync`, `mailbox`.
    pub via: String,
    /// When this device stored it (ms since the epoch; envelopes carry no
    /// time, so each device shows its own).
    #[serde(default)]
    pub received_ms: i64,
}

/// An outbox entry due for delivery.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Recipient PeerId.
    pub recipient: String,
    /// The envelope.
    pub envelope: Envelope,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued (ms since the epoch).
    pub created_ms: i64,
}

/// What accepting an envelope did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// False when it was a repeat (acked again, stored once).
    pub new: bool,
    /// Counters of this sender still missing below the newest one.
    pub missing: Vec<(u64, u64)>,
}

/// Where a file is and whether it is complete and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// SHA-256 (hex): the file's id.
    pub sha256: String,
    /// Local path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Name.
    pub name: String,
    /// Mime type.
    pub mime: String,
    /// True once its bytes are all here and hash to `sha256`.
    pub complete: bool,
    /// Who has it (for downloads).
    pub source: String,
}

/// The id of the direct conversation between two devices: the same on both.
pub fn direct_conversation_id(a: &str, b: &str) -> String {
    use sha2::Digest;
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let digest = sha2::Sha256::digest(format!("{x}\n{y}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("dm-{hex}")
}

/// Milliseconds since the Unix epoch, as the store records times.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Retry delay after `attempts` failed deliveries: 0.5 s doubling to 60 s.
pub fn backoff(attempts: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempts.min(7));
    Duration::from_millis(ms.min(60_000))
}

/// The synchronous store.
pub struct Store {
    conn: Connection,
    me: String,
    max_envelope_bytes: usize,
    /// This device's MLS client, once [`Store::enable_mls`] ran.
    mls: Option<crate::mls::Mls>,
    /// How often this device updates its keys where it commits.
    key_update_every: Duration,
}

impl Store {
    /// Opens (creating) `data_dir/p2p.sqlite` for the device `me`.
    pub fn open(
        data_dir: &Path,
        me: PeerId,
        max_envelope_bytes: usize,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Invalid(format!("data dir {}: {e}", data_dir.display())))?;
        let conn = Connection::open(data_dir.join(STORE_FILE))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(encrypted::SCHEMA)?;
        Ok(Store {
            conn,
            me: me.to_base58(),
            max_envelope_bytes,
            mls: None,
            key_update_every: KEY_UPDATE_INTERVAL,
        })
    }

    /// This device's PeerId.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// A meta value (display name, …).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Adds a contact or updates its name and addresses; makes the direct
    /// conversation with it.
    pub fn add_contact(&mut self, c: &Contact) -> Result<(), StoreError> {
        if c.peer_id == self.me {
            return Err(StoreError::Invalid("that link is this device's own".into()));
        }
        let addrs = serde_json::to_string(&c.addrs).unwrap_or_else(|_| "[]".into());
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO contacts(peer_id, name, addrs, relay, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(peer_id) DO UPDATE SET
               name = CASE WHEN excluded.name = '' THEN contacts.name ELSE excluded.name END,
               addrs = CASE WHEN excluded.addrs = '[]' THEN contacts.addrs ELSE excluded.addrs END,
               relay = COALESCE(excluded.relay, contacts.relay)",
            params![c.peer_id, c.name, addrs, c.relay, now_ms()],
        )?;
        let conv = direct_conversation_id(&self.me, &c.peer_id);
        tx.execute(
            "INSERT OR IGNORE INTO conversations(id, kind, title, admin, created_at) VALUES (?1, 'direct', '', '', ?2)",
            params![conv, now_ms()],
        )?;
        for m in [&self.me, &c.peer_id] {
            tx.execute(
                "INSERT OR IGNORE INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                params![conv, m],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer_id, name, addrs, relay FROM contacts ORDER BY name, peer_id")?;
        let rows = stmt.query_map([], |r| {
            let addrs: String = r.get(2)?;
            Ok(Contact {
                peer_id: r.get(0)?,
                name: r.get(1)?,
                addrs: serde_json::from_str(&addrs).unwrap_or_default(),
                relay: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Finds a contact by PeerId or name.
    pub fn find_contact(&self, who: &str) -> Result<Contact, StoreError> {
        let all = self.contacts()?;
        if let Some(c) = all.iter().find(|c| c.peer_id == who) {
            return Ok(c.clone());
        }
        let named: Vec<_> = all.into_iter().filter(|c| c.name == who).collect();
        match named.len() {
            1 => Ok(named
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::NotFound(who.into()))?),
            0 => Err(StoreError::NotFound(format!(
                "no contact named {who:?}; add one with `confab p2p add LINK`"
            ))),
            _ => Err(StoreError::Invalid(format!(
                "several contacts are named {who:?}; use the PeerId"
            ))),
        }
    }

    /// A conversation with its members.
    pub fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, kind, title, admin FROM conversations WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, kind, title, admin)) = row else {
            return Ok(None);
        };
        let members = self.members(&id)?;
        Ok(Some(Conversation {
            id,
            kind,
            title,
            admin,
            members,
        }))
    }

    fn members(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer_id FROM members WHERE conversation_id = ?1 ORDER BY peer_id")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every conversation, groups by title.
    pub fn conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let ids: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM conversations ORDER BY kind, title, id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.conversation(&id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Conversations that both this device and `peer` belong to.
    pub fn shared_conversations(&self, peer: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT a.conversation_id FROM members a JOIN members b
               ON a.conversation_id = b.conversation_id
             WHERE a.peer_id = ?1 AND b.peer_id = ?2",
        )?;
        let rows = stmt.query_map(params![self.me, peer], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn lamport(tx: &rusqlite::Transaction<'_>) -> Result<Lamport, StoreError> {
        let v: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'lamport'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(Lamport(v.and_then(|v| v.parse().ok()).unwrap_or(0)))
    }

    fn save_lamport(tx: &rusqlite::Transaction<'_>, clock: Lamport) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('lamport', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [clock.0.to_string()],
        )?;
        Ok(())
    }

    /// Makes, signs and stores a new envelope from this device, and queues
    /// it in the outbox of every other member. Returns the envelope.
    pub fn compose(
        &mut self,
        key: &Keypair,
        conversation_id: &str,
        kind: &str,
        body: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Envelope, StoreError> {
        let conv = self
            .conversation(conversation_id)?
            .ok_or_else(|| StoreError::NotFound(format!("no conversation {conversation_id}")))?;
        if !conv.members.contains(&self.me) {
            return Err(StoreError::Invalid(
                "this device left that conversation".into(),
            ));
        }
        // Never a plaintext message in an encrypted conversation.
        if [kind::TEXT, kind::IMAGE, kind::VOICE, kind::FILE].contains(&kind)
            && self.is_encrypted(conversation_id)?
        {
            return Err(StoreError::Invalid(format!(
                "{conversation_id} is encrypted: send with --encrypted (Node::send_encrypted)"
            )));
        }
        let me = self.me.clone();
        let client_msg_id = client_msg_id
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let tx = self.conn.transaction()?;
        // A resend of the same client_msg_id returns the stored envelope.
        let existing: Option<String> = tx
            .query_row(
                "SELECT envelope FROM messages WHERE sender = ?1 AND client_msg_id = ?2",
                params![me, client_msg_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(text) = existing {
            return serde_json::from_str(&text)
                .map_err(|e| StoreError::Invalid(format!("stored envelope: {e}")));
        }
        let counter: i64 = tx.query_row(
            "SELECT COALESCE(MAX(counter), 0) + 1 FROM messages WHERE conversation_id = ?1 AND sender = ?2",
            params![conversation_id, me],
            |r| r.get(0),
        )?;
        let mut clock = Self::lamport(&tx)?;
        let env = Envelope::sign(
            Draft {
                conversation_id: conversation_id.into(),
                counter: u64::try_from(counter).unwrap_or(1),
                client_msg_id,
                lamport: clock.tick(),
                kind: kind.into(),
                body: body.into(),
            },
            key,
        );
        env.verify(self.max_envelope_bytes)?;
        Self::save_lamport(&tx, clock)?;
        Self::insert(&tx, &env, "local")?;
        let text = serde_json::to_string(&env).unwrap_or_default();
        for m in conv.members.iter().filter(|m| **m != me) {
            tx.execute(
                "INSERT OR IGNORE INTO outbox(recipient, client_msg_id, conversation_id, envelope, attempts, next_attempt_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, ?5)",
                params![m, env.client_msg_id, env.conversation_id, text, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(env)
    }

    fn insert(
        tx: &rusqlite::Transaction<'_>,
        env: &Envelope,
        via: &str,
    ) -> Result<bool, StoreError> {
        let text = serde_json::to_string(env).unwrap_or_default();
        let n = tx.execute(
            "INSERT OR IGNORE INTO messages(conversation_id, sender, counter, client_msg_id, lamport, kind, body, envelope, via, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                env.conversation_id,
                env.sender,
                i64::try_from(env.counter).unwrap_or(i64::MAX),
                env.client_msg_id,
                i64::try_from(env.lamport).unwrap_or(i64::MAX),
                env.kind,
                env.body,
                text,
                via,
                now_ms()
            ],
        )?;
        Ok(n == 1)
    }

    fn progress(
        tx: &rusqlite::Transaction<'_>,
        conversation_id: &str,
        sender: &str,
    ) -> Result<SenderProgress, StoreError> {
        let contiguous: i64 = tx
            .query_row(
                "SELECT contiguous FROM cursors WHERE conversation_id = ?1 AND sender = ?2",
                params![conversation_id, sender],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut stmt = tx.prepare(
            "SELECT counter FROM messages WHERE conversation_id = ?1 AND sender = ?2 AND counter > ?3",
        )?;
        let above = stmt
            .query_map(params![conversation_id, sender, contiguous], |r| {
                r.get::<_, i64>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SenderProgress {
            contiguous: u64::try_from(contiguous).unwrap_or(0),
            above: above
                .into_iter()
                .filter_map(|c| u64::try_from(c).ok())
                .collect(),
        })
    }

    /// Checks a verified envelope against membership, stores it durably and
    /// moves the sender's cursor. `via` says how it came (for counters and
    /// history). Repeats are recognised and stored once.
    pub fn accept(&mut self, env: &Envelope, via: &str) -> Result<Accepted, StoreError> {
        env.verify(self.max_envelope_bytes)?;
        if env.kind == kind::TYPING {
            return Err(Refusal::Malformed("typing envelopes are not stored".into()).into());
        }
        let me = self.me.clone();
        let known_contact = |conn: &Connection, peer: &str| -> Result<bool, StoreError> {
            Ok(conn
                .query_row("SELECT 1 FROM contacts WHERE peer_id = ?1", [peer], |_| {
                    Ok(())
                })
                .optional()?
                .is_some())
        };
        self.prepare_encrypted_direct(env)?;
        let conv = self.conversation(&env.conversation_id)?;
        let conv = match conv {
            Some(c) => c,
            // A group we have not seen: its group_create lists the members,
            // or the admin's change that adds us carries the whole member
            // list (the group_create and the rest of the history come by
            // catch-up, from any member).
            None if env.kind == kind::GROUP_CREATE || env.kind == kind::GROUP_CHANGE => {
                if !known_contact(&self.conn, &env.sender)? {
                    return Err(Refusal::UnknownSender(env.sender.clone()).into());
                }
                let (title, members, includes_me) = if env.kind == kind::GROUP_CREATE {
                    let group = GroupCreate::parse(&env.body)?;
                    let includes_me = group.members.iter().any(|m| m.peer == me);
                    (group.title, group.members, includes_me)
                } else {
                    let change = GroupChange::parse(&env.body)?;
                    let includes_me = change.add.iter().any(|m| m.peer == me);
                    (change.title, change.members, includes_me)
                };
                if !includes_me || !members.iter().any(|m| m.peer == env.sender) {
                    return Err(Refusal::NotMember(
                        env.sender.clone(),
                        env.conversation_id.clone(),
                    )
                    .into());
                }
                Conversation {
                    id: env.conversation_id.clone(),
                    kind: "group".into(),
                    title,
                    admin: env.sender.clone(),
                    members: members.into_iter().map(|m| m.peer).collect(),
                }
            }
            None => {
                if !known_contact(&self.conn, &env.sender)? {
                    return Err(Refusal::UnknownSender(env.sender.clone()).into());
                }
                return Err(
                    Refusal::NotMember(env.sender.clone(), env.conversation_id.clone()).into(),
                );
            }
        };
        if !conv.members.contains(&env.sender) {
            if !known_contact(&self.conn, &env.sender)? {
                return Err(Refusal::UnknownSender(env.sender.clone()).into());
            }
            return Err(Refusal::NotMember(env.sender.clone(), env.conversation_id.clone()).into());
        }
        if env.kind == kind::GROUP_CHANGE && env.sender != conv.admin {
            return Err(StoreError::Invalid(
                "only the group's admin changes its members".into(),
            ));
        }
        let tx = self.conn.transaction()?;
        // Membership envelopes all come from the admin, so its counter
        // orders them: one older than a change already applied (it came
        // late, by catch-up) is stored but changes nothing.
        let membership_newest = matches!(
            env.kind.as_str(),
            kind::GROUP_CREATE | kind::GROUP_CHANGE
        ) && tx
            .query_row(
                "SELECT MAX(counter) FROM messages WHERE conversation_id = ?1 AND sender = ?2
                     AND kind IN ('group_create', 'group_change')",
                params![env.conversation_id, env.sender],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .is_none_or(|max| i64::try_from(env.counter).unwrap_or(i64::MAX) > max);
        let mut progress = Self::progress(&tx, &env.conversation_id, &env.sender)?;
        let new = Self::insert(&tx, env, via)?;
        if new {
            progress.record(env.counter);
            tx.execute(
                "INSERT INTO cursors(conversation_id, sender, contiguous) VALUES (?1, ?2, ?3)
                 ON CONFLICT(conversation_id, sender) DO UPDATE SET contiguous = excluded.contiguous",
                params![env.conversation_id, env.sender, i64::try_from(progress.contiguous).unwrap_or(0)],
            )?;
            let mut clock = Self::lamport(&tx)?;
            clock.observe(env.lamport);
            Self::save_lamport(&tx, clock)?;
            if env.kind == kind::GROUP_CREATE && membership_newest {
                let group = GroupCreate::parse(&env.body)?;
                tx.execute(
                    "INSERT OR IGNORE INTO conversations(id, kind, title, admin, created_at) VALUES (?1, 'group', ?2, ?3, ?4)",
                    params![env.conversation_id, group.title, env.sender, now_ms()],
                )?;
                for m in &group.members {
                    tx.execute(
                        "INSERT OR IGNORE INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                        params![env.conversation_id, m.peer],
                    )?;
                    // Fellow members become reachable (for catch-up) without being added by hand.
                    if m.peer != me {
                        let addrs = serde_json::to_string(&m.addrs).unwrap_or_else(|_| "[]".into());
                        tx.execute(
                            "INSERT OR IGNORE INTO contacts(peer_id, name, addrs, relay, added_at) VALUES (?1, ?2, ?3, NULL, ?4)",
                            params![m.peer, m.name, addrs, now_ms()],
                        )?;
                    }
                }
            } else if env.kind == kind::GROUP_CHANGE && membership_newest {
                let change = GroupChange::parse(&env.body)?;
                // A member added to a group it had not seen makes it here.
                tx.execute(
                    "INSERT OR IGNORE INTO conversations(id, kind, title, admin, created_at) VALUES (?1, 'group', ?2, ?3, ?4)",
                    params![env.conversation_id, change.title, env.sender, now_ms()],
                )?;
                // The full list, when the change carries it, is the truth;
                // the add and remove lists otherwise.
                if !change.members.is_empty() {
                    tx.execute(
                        "DELETE FROM members WHERE conversation_id = ?1",
                        [&env.conversation_id],
                    )?;
                }
                for m in change.members.iter().chain(&change.add) {
                    tx.execute(
                        "INSERT OR IGNORE INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                        params![env.conversation_id, m.peer],
                    )?;
                    if m.peer != me {
                        let addrs = serde_json::to_string(&m.addrs).unwrap_or_else(|_| "[]".into());
                        tx.execute(
                            "INSERT OR IGNORE INTO contacts(peer_id, name, addrs, relay, added_at) VALUES (?1, ?2, ?3, NULL, ?4)",
                            params![m.peer, m.name, addrs, now_ms()],
                        )?;
                    }
                }
                for p in &change.remove {
                    tx.execute(
                        "DELETE FROM members WHERE conversation_id = ?1 AND peer_id = ?2",
                        params![env.conversation_id, p],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(Accepted {
            new,
            missing: progress.missing(),
        })
    }

    /// Creates a group with this device as admin: stores the signed
    /// `group_create` and queues it to every member.
    pub fn create_group(
        &mut self,
        key: &Keypair,
        title: &str,
        members: &[String],
    ) -> Result<Envelope, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut list = vec![GroupMember {
            peer: self.me.clone(),
            name: self.meta("name")?.unwrap_or_default(),
            addrs: Vec::new(),
        }];
        for m in members {
            let c = self.find_contact(m)?;
            if !list.iter().any(|x| x.peer == c.peer_id) {
                list.push(GroupMember {
                    peer: c.peer_id,
                    name: c.name,
                    addrs: c.addrs,
                });
            }
        }
        let body = serde_json::to_string(&GroupCreate {
            title: title.into(),
            members: list.clone(),
        })
        .unwrap_or_default();
        {
            let tx = self.conn.transaction()?;
            tx.execute(
                "INSERT INTO conversations(id, kind, title, admin, created_at) VALUES (?1, 'group', ?2, ?3, ?4)",
                params![id, title, self.me, now_ms()],
            )?;
            for m in &list {
                tx.execute(
                    "INSERT INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                    params![id, m.peer],
                )?;
            }
            tx.commit()?;
        }
        self.compose(key, &id, kind::GROUP_CREATE, &body, None)
    }

    /// Adds or removes group members (admin only) through a signed
    /// `group_change` that also carries the title and the whole member list
    /// after the change: a new member makes the group from it and gets the
    /// history (the `group_create` included) by catch-up from any member.
    /// A removed member gets the change too, then nothing more.
    pub fn change_group(
        &mut self,
        key: &Keypair,
        conversation_id: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Envelope, StoreError> {
        let conv = self
            .conversation(conversation_id)?
            .ok_or_else(|| StoreError::NotFound(format!("no conversation {conversation_id}")))?;
        if conv.kind != "group" {
            return Err(StoreError::Invalid(format!(
                "{conversation_id} is not a group"
            )));
        }
        if conv.admin != self.me {
            return Err(StoreError::Invalid(
                "only the group's admin changes its members".into(),
            ));
        }
        let mut change = GroupChange {
            title: conv.title.clone(),
            ..GroupChange::default()
        };
        for m in add {
            let c = self.find_contact(m)?;
            if !conv.members.contains(&c.peer_id) && !change.add.iter().any(|x| x.peer == c.peer_id)
            {
                change.add.push(GroupMember {
                    peer: c.peer_id,
                    name: c.name,
                    addrs: c.addrs,
                });
            }
        }
        for m in remove {
            let peer = self.find_contact(m)?.peer_id;
            if peer == self.me {
                return Err(StoreError::Invalid("the admin cannot remove itself".into()));
            }
            if conv.members.contains(&peer) && !change.remove.contains(&peer) {
                change.remove.push(peer);
            }
        }
        if change.add.is_empty() && change.remove.is_empty() {
            return Err(StoreError::Invalid(
                "nothing to change: already members / not members".into(),
            ));
        }
        let contacts: BTreeMap<String, Contact> = self
            .contacts()?
            .into_iter()
            .map(|c| (c.peer_id.clone(), c))
            .collect();
        let me_name = self.meta("name")?.unwrap_or_default();
        for peer in conv.members.iter().filter(|p| !change.remove.contains(p)) {
            change.members.push(match contacts.get(peer) {
                Some(c) => GroupMember {
                    peer: c.peer_id.clone(),
                    name: c.name.clone(),
                    addrs: c.addrs.clone(),
                },
                None => GroupMember {
                    peer: peer.clone(),
                    name: if *peer == self.me {
                        me_name.clone()
                    } else {
                        String::new()
                    },
                    addrs: Vec::new(),
                },
            });
        }
        change.members.extend(change.add.iter().cloned());
        let body = serde_json::to_string(&change).unwrap_or_default();
        // Members are added before composing so the outbox reaches the new
        // ones, and removed after, so the removed ones learn of it.
        let tx = self.conn.transaction()?;
        for m in &change.add {
            tx.execute(
                "INSERT OR IGNORE INTO members(conversation_id, peer_id) VALUES (?1, ?2)",
                params![conversation_id, m.peer],
            )?;
        }
        tx.commit()?;
        let env = self.compose(key, conversation_id, kind::GROUP_CHANGE, &body, None)?;
        for p in &change.remove {
            self.conn.execute(
                "DELETE FROM members WHERE conversation_id = ?1 AND peer_id = ?2",
                params![conversation_id, p],
            )?;
        }
        Ok(env)
    }

    /// The conversation a user means: a contact (name or PeerId: the direct
    /// conversation with it) or a group (id or title).
    pub fn resolve_conversation(&self, target: &str) -> Result<String, StoreError> {
        if let Ok(c) = self.find_contact(target) {
            return Ok(crate::direct_conversation_id(&self.me, &c.peer_id));
        }
        let groups: Vec<Conversation> = self
            .conversations()?
            .into_iter()
            .filter(|c| c.kind == "group" && (c.id == target || c.title == target))
            .collect();
        match groups.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(StoreError::NotFound(format!(
                "no contact or group {target:?}"
            ))),
            _ => Err(StoreError::Invalid(format!(
                "several groups are titled {target:?}; use the id"
            ))),
        }
    }

    /// A signed `typing` envelope for a conversation this device is in, and
    /// the other members to hand it to. Nothing is stored or queued.
    pub fn compose_typing(
        &self,
        key: &Keypair,
        conversation_id: &str,
    ) -> Result<(Envelope, Vec<String>), StoreError> {
        let conv = self
            .conversation(conversation_id)?
            .ok_or_else(|| StoreError::NotFound(format!("no conversation {conversation_id}")))?;
        if !conv.members.contains(&self.me) {
            return Err(StoreError::Invalid(
                "this device left that conversation".into(),
            ));
        }
        let env = Envelope::sign(
            Draft {
                conversation_id: conversation_id.into(),
                counter: 0,
                client_msg_id: uuid::Uuid::new_v4().to_string(),
                lamport: 0,
                kind: kind::TYPING.into(),
                body: "{}".into(),
            },
            key,
        );
        let others = conv.members.into_iter().filter(|m| *m != self.me).collect();
        Ok((env, others))
    }

    /// Checks an ephemeral envelope (`typing`) like a stored one is
    /// checked (signature, sender a member), without storing it.
    pub fn check_ephemeral(&self, env: &Envelope) -> Result<(), StoreError> {
        env.verify(self.max_envelope_bytes)?;
        if env.kind != kind::TYPING {
            return Err(Refusal::Malformed(format!("{} is not ephemeral", env.kind)).into());
        }
        let member = self
            .conversation(&env.conversation_id)?
            .is_some_and(|c| c.members.contains(&env.sender));
        if member {
            return Ok(());
        }
        let known = self.find_contact(&env.sender).is_ok();
        Err(if known {
            Refusal::NotMember(env.sender.clone(), env.conversation_id.clone())
        } else {
            Refusal::UnknownSender(env.sender.clone())
        }
        .into())
    }

    /// Who has read what: for each message, the members whose `receipt`
    /// (state `read`) names it.
    pub fn read_by(
        &self,
        conversation_id: &str,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT sender, body FROM messages WHERE conversation_id = ?1 AND kind = 'receipt'",
        )?;
        let rows = stmt.query_map([conversation_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in rows {
            let (sender, body) = row?;
            let Ok(receipt) = serde_json::from_str::<Receipt>(&body) else {
                continue;
            };
            if receipt.state != "read" {
                continue;
            }
            for id in receipt.of {
                out.entry(id).or_default().insert(sender.clone());
            }
        }
        Ok(out)
    }

    /// Marks everything others sent in a conversation as read: a signed
    /// `receipt` (state `read`) naming the messages not named by an
    /// earlier one of this device, delivered like any message. `None` when
    /// there is nothing new to mark.
    pub fn mark_read(
        &mut self,
        key: &Keypair,
        conversation_id: &str,
    ) -> Result<Option<Envelope>, StoreError> {
        let read = self.read_by(conversation_id)?;
        let unread: Vec<String> = self
            .history(conversation_id)?
            .into_iter()
            .filter(|m| {
                m.sender != self.me
                    && matches!(
                        m.kind.as_str(),
                        kind::TEXT | kind::IMAGE | kind::VOICE | kind::FILE | kind::ENCRYPTED
                    )
                    && !read
                        .get(&m.client_msg_id)
                        .is_some_and(|who| who.contains(&self.me))
            })
            .map(|m| m.client_msg_id)
            .take(MAX_RECEIPT_IDS)
            .collect();
        if unread.is_empty() {
            return Ok(None);
        }
        let body = serde_json::to_string(&Receipt {
            of: unread,
            state: "read".into(),
        })
        .unwrap_or_default();
        self.compose(key, conversation_id, kind::RECEIPT, &body, None)
            .map(Some)
    }

    /// The conversation's messages in the order every member shows.
    pub fn history(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1
             ORDER BY lamport, sender, counter"
        ))?;
        let rows = stmt.query_map([conversation_id], message_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One stored message by its place (conversation, sender, counter).
    pub fn message_at(
        &self,
        conversation_id: &str,
        sender: &str,
        counter: u64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE conversation_id = ?1 AND sender = ?2 AND counter = ?3"
                ),
                params![
                    conversation_id,
                    sender,
                    i64::try_from(counter).unwrap_or(i64::MAX)
                ],
                message_row,
            )
            .optional()?)
    }

    /// Contiguous cursors per sender in a conversation: what a catch-up
    /// request says this device already has.
    pub fn cursors(&self, conversation_id: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT sender, contiguous FROM cursors WHERE conversation_id = ?1")?;
        let rows = stmt.query_map([conversation_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?;
        let mut out: BTreeMap<String, u64> = rows.collect::<Result<_, _>>()?;
        // Own messages are contiguous by construction.
        let own: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(counter), 0) FROM messages WHERE conversation_id = ?1 AND sender = ?2",
            params![conversation_id, self.me],
            |r| r.get(0),
        )?;
        if own > 0 {
            out.insert(self.me.clone(), u64::try_from(own).unwrap_or(0));
        }
        Ok(out)
    }

    /// Answers a catch-up request from `asker` (who must be a member): the
    /// envelopes above the asker's cursors, in display order, at most
    /// [`SYNC_PAGE`], and whether more remain. Any member can answer: the
    /// envelopes carry their original senders' signatures.
    pub fn answer_sync(
        &self,
        asker: &str,
        conversation_id: &str,
        have: &BTreeMap<String, u64>,
    ) -> Result<(Vec<Envelope>, bool), StoreError> {
        let conv = self
            .conversation(conversation_id)?
            .ok_or_else(|| StoreError::NotFound(format!("no conversation {conversation_id}")))?;
        if !conv.members.iter().any(|m| m == asker) {
            return Err(Refusal::NotMember(asker.into(), conversation_id.into()).into());
        }
        let mut stmt = self.conn.prepare(
            "SELECT sender, counter, envelope FROM messages WHERE conversation_id = ?1
             ORDER BY lamport, sender, counter",
        )?;
        let rows = stmt.query_map([conversation_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        let mut more = false;
        for row in rows {
            let (sender, counter, text) = row?;
            let counter = u64::try_from(counter).unwrap_or(0);
            if counter <= have.get(&sender).copied().unwrap_or(0) {
                continue;
            }
            if out.len() == SYNC_PAGE {
                more = true;
                break;
            }
            if let Ok(env) = serde_json::from_str(&text) {
                out.push(env);
            }
        }
        Ok((out, more))
    }

    /// Outbox entries for `recipient` that are due (all of them if `force`,
    /// e.g. when the contact just connected).
    pub fn due(&self, recipient: &str, force: bool) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT recipient, envelope, attempts, created_ms FROM outbox
             WHERE recipient = ?1 AND (?2 OR next_attempt_ms <= ?3) ORDER BY created_ms, rowid",
        )?;
        let rows = stmt.query_map(params![recipient, force, now_ms()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (recipient, text, attempts, created_ms) = row?;
            if let Ok(envelope) = serde_json::from_str(&text) {
                out.push(Pending {
                    recipient,
                    envelope,
                    attempts,
                    created_ms,
                });
            }
        }
        Ok(out)
    }

    /// Outbox entries for `recipient` made more than `older_than` ago: the
    /// ones worth leaving in a mailbox when the recipient stays unreachable.
    pub fn stale(&self, recipient: &str, older_than: Duration) -> Result<Vec<Pending>, StoreError> {
        let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(0);
        Ok(self
            .due(recipient, true)?
            .into_iter()
            .filter(|p| p.created_ms <= cutoff)
            .collect())
    }

    /// Recipients with anything in the outbox.
    pub fn outbox_recipients(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT recipient FROM outbox ORDER BY recipient")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of outbox entries.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether an envelope is still waiting for `recipient`'s ack.
    pub fn is_pending(&self, recipient: &str, client_msg_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM outbox WHERE recipient = ?1 AND client_msg_id = ?2",
                params![recipient, client_msg_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The recipient acked: the entry leaves the outbox.
    pub fn delivered(&self, recipient: &str, client_msg_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM outbox WHERE recipient = ?1 AND client_msg_id = ?2",
            params![recipient, client_msg_id],
        )?;
        Ok(())
    }

    /// A delivery failed: retry later with backoff.
    pub fn failed(&self, recipient: &str, client_msg_id: &str) -> Result<(), StoreError> {
        let attempts: Option<u32> = self
            .conn
            .query_row(
                "SELECT attempts FROM outbox WHERE recipient = ?1 AND client_msg_id = ?2",
                params![recipient, client_msg_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(a) = attempts {
            let delay = i64::try_from(backoff(a).as_millis()).unwrap_or(60_000);
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?3
                 WHERE recipient = ?1 AND client_msg_id = ?2",
                params![recipient, client_msg_id, now_ms() + delay],
            )?;
        }
        Ok(())
    }

    /// Records a file (sent: complete at `path`; incoming: being downloaded).
    pub fn put_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO files(sha256, path, size, name, mime, complete, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(sha256) DO UPDATE SET complete = MAX(files.complete, excluded.complete),
               path = CASE WHEN files.complete = 1 THEN files.path ELSE excluded.path END",
            params![
                f.sha256,
                f.path,
                i64::try_from(f.size).unwrap_or(i64::MAX),
                f.name,
                f.mime,
                f.complete,
                f.source
            ],
        )?;
        Ok(())
    }

    /// A file by its SHA-256.
    pub fn file(&self, sha256: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sha256, path, size, name, mime, complete, source FROM files WHERE sha256 = ?1",
                [sha256],
                |r| {
                    Ok(FileRecord {
                        sha256: r.get(0)?,
                        path: r.get(1)?,
                        size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        name: r.get(3)?,
                        mime: r.get(4)?,
                        complete: r.get(5)?,
                        source: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Incomplete incoming files.
    pub fn incomplete_files(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT sha256 FROM files WHERE complete = 0 ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counters of senders with gaps: (conversation, sender, missing ranges).
    pub fn gaps(&self) -> Result<Vec<Gap>, StoreError> {
        let pairs: Vec<(String, String)> = {
            let mut stmt = self.conn.prepare(
                "SELECT DISTINCT m.conversation_id, m.sender FROM messages m
                 LEFT JOIN cursors c ON c.conversation_id = m.conversation_id AND c.sender = m.sender
                 WHERE m.counter > COALESCE(c.contiguous, 0) AND m.sender != ?1",
            )?;
            let rows = stmt.query_map([&self.me], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        let tx = self.conn.unchecked_transaction()?;
        for (c, s) in pairs {
            let p = Self::progress(&tx, &c, &s)?;
            let missing = p.missing();
            if !missing.is_empty() {
                out.push((c, s, missing));
            }
        }
        Ok(out)
    }

    /// Distinct senders with unacked envelopes, for tests and status.
    pub fn pending_ids(&self, recipient: &str) -> Result<BTreeSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT client_msg_id FROM outbox WHERE recipient = ?1")?;
        let rows = stmt.query_map([recipient], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A member as a `group_create` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// PeerId.
    pub peer: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Addresses, so members can reach each other for catch-up.
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// Body of a `group_create` envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupCreate {
    /// Title.
    pub title: String,
    /// Members, the admin (the sender) included.
    pub members: Vec<GroupMember>,
}

impl GroupCreate {
    fn parse(body: &str) -> Result<GroupCreate, Refusal> {
        serde_json::from_str(body)
            .map_err(|e| Refusal::Malformed(format!("group_create body: {e}")))
    }
}

impl GroupChange {
    fn parse(body: &str) -> Result<GroupChange, Refusal> {
        serde_json::from_str(body)
            .map_err(|e| Refusal::Malformed(format!("group_change body: {e}")))
    }
}

/// Most message ids one receipt names (a UUID is 36 bytes: 512 of them
/// stay well under the 64 KiB envelope limit); more need another receipt.
pub const MAX_RECEIPT_IDS: usize = 512;

/// Body of a `receipt` envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Receipt {
    /// The `client_msg_id`s it covers.
    pub of: Vec<String>,
    /// `read` (delivery needs no receipt: the ack says it).
    pub state: String,
}

/// Body of a `group_change` envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupChange {
    /// Members added.
    #[serde(default)]
    pub add: Vec<GroupMember>,
    /// PeerIds removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// The title, so an added member that has not seen the group yet can
    /// make it from this envelope alone.
    #[serde(default)]
    pub title: String,
    /// Every member after the change (the admin included), for the same
    /// reason.
    #[serde(default)]
    pub members: Vec<GroupMember>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts(
  peer_id TEXT PRIMARY KEY, name TEXT NOT NULL, addrs TEXT NOT NULL DEFAULT '[]',
  relay TEXT, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conversations(
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
  admin TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members(
  conversation_id TEXT NOT NULL, peer_id TEXT NOT NULL,
  PRIMARY KEY(conversation_id, peer_id));
CREATE TABLE IF NOT EXISTS messages(
  conversation_id TEXT NOT NULL, sender TEXT NOT NULL, counter INTEGER NOT NULL,
  client_msg_id TEXT NOT NULL, lamport INTEGER NOT NULL, kind TEXT NOT NULL,
  body TEXT NOT NULL, envelope TEXT NOT NULL, via TEXT NOT NULL, received_ms INTEGER NOT NULL,
  PRIMARY KEY(conversation_id, sender, counter), UNIQUE(sender, client_msg_id));
CREATE INDEX IF NOT EXISTS messages_order ON messages(conversation_id, lamport, sender);
CREATE TABLE IF NOT EXISTS cursors(
  conversation_id TEXT NOT NULL, sender TEXT NOT NULL, contiguous INTEGER NOT NULL,
  PRIMARY KEY(conversation_id, sender));
CREATE TABLE IF NOT EXISTS outbox(
  recipient TEXT NOT NULL, client_msg_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
  envelope TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, PRIMARY KEY(recipient, client_msg_id));
CREATE TABLE IF NOT EXISTS files(
  sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, name TEXT NOT NULL,
  mime TEXT NOT NULL, complete INTEGER NOT NULL, source TEXT NOT NULL DEFAULT '');
";

const MESSAGE_COLUMNS: &str =
    "conversation_id, sender, counter, client_msg_id, lamport, kind, body, via, received_ms";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        conversation_id: r.get(0)?,
        sender: r.get(1)?,
        counter: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        client_msg_id: r.get(3)?,
        lamport: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        kind: r.get(5)?,
        body: r.get(6)?,
        via: r.get(7)?,
        received_ms: r.get(8)?,
    })
}

/// A sender's gaps in a conversation: (conversation, sender, missing ranges).
pub type Gap = (String, String, Vec<(u64, u64)>);

/// The store shared by the swarm task, the control socket and commands.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Mutex<Store>>,
}

impl SharedStore {
    /// Wraps a store.
    pub fn new(store: Store) -> SharedStore {
        SharedStore {
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `f` on the blocking pool with the store locked.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner
                .lock()
                .map_err(|_| StoreError::Task("store mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

mod encrypted;
pub use encrypted::{
    encrypted_direct_conversation_id, Plain, Shown, WaitingSend, KEY_UPDATE_INTERVAL,
};

#[cfg(test)]
mod tests;
