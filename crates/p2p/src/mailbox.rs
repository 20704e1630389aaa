//! The mailbox: store-and-forward of signed envelopes for a recipient
//! PeerId, kept by a Confab server in its own SQLite file. Its wire
//! (`/confab/mailbox/1`, whole JSON request, whole JSON response) and its
//! store; the server loop is in [`crate::relay`], the client side in
//! [`crate::node`].
//!
//! The mailbox sees who sends to whom, when, and the envelope (signed, not
//! encrypted unless the body is an `encrypted` kind). It cannot forge or
//! alter an envelope (receivers check the sender's signature) and hands a
//! recipient's envelopes only to a peer that signed a fresh challenge with
//! the recipient's key.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::StreamProtocol;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::store::StoreError;

/// The mailbox protocol.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/confab/mailbox/1");

/// Most envelopes in one fetch answer.
pub const FETCH_PAGE: usize = 256;

/// Domain of the challenge signature.
pub const CHALLENGE_DOMAIN: &str = "confab-mailbox-v1";

/// A request to the mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MailboxRequest {
    /// Leave an envelope (signed by the connected peer) for `recipient`.
    Put {
        /// Recipient PeerId.
        recipient: String,
        /// The envelope.
        envelope: Envelope,
    },
    /// Ask for a challenge to prove the connected PeerId.
    Challenge,
    /// Fetch what waits for the connected peer, with the signed challenge.
    Fetch {
        /// The nonce from `challenge`.
        nonce: String,
        /// Base64 Ed25519 signature of [`challenge_bytes`].
        sig: String,
    },
    /// Delete fetched envelopes after they were stored.
    Ack {
        /// Ids from `fetch`.
        ids: Vec<i64>,
    },
}

/// One waiting envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    /// Mailbox id (for `ack`).
    pub id: i64,
    /// The envelope.
    pub envelope: Envelope,
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MailboxResponse {
    /// Whether it worked.
    pub ok: bool,
    /// For `challenge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// For `fetch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envelopes: Vec<Held>,
    /// For `fetch`: more wait.
    #[serde(default)]
    pub has_more: bool,
    /// snake_case code when not ok (`quota_exceeded`, `bad_signature`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The bytes a recipient signs to fetch: domain, the mailbox's PeerId and
/// the nonce, separated by newlines.
pub fn challenge_bytes(mailbox_peer: &str, nonce: &str) -> Vec<u8> {
    format!("{CHALLENGE_DOMAIN}\n{mailbox_peer}\n{nonce}").into_bytes()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The mailbox's SQLite file.
pub struct MailboxStore {
    conn: Connection,
    ttl: Duration,
    quota: u64,
}

/// Why a put was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored (or already there).
    Stored,
    /// The recipient's quota is full.
    QuotaExceeded,
}

impl MailboxStore {
    /// Opens (creating) `dir/mailbox.sqlite`.
    pub fn open(dir: &Path, ttl: Duration, quota: u64) -> Result<MailboxStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("mailbox.sqlite"))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS mailbox(
               id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, sender TEXT NOT NULL,
               client_msg_id TEXT NOT NULL, envelope TEXT NOT NULL, stored_ms INTEGER NOT NULL,
               UNIQUE(recipient, sender, client_msg_id));
             CREATE INDEX IF NOT EXISTS mailbox_recipient ON mailbox(recipient, id);",
        )?;
        Ok(MailboxStore { conn, ttl, quota })
    }

    fn cutoff(&self) -> i64 {
        now_ms() - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Stores a (verified) envelope for a recipient, within its quota.
    pub fn put(&self, recipient: &str, env: &Envelope) -> Result<PutOutcome, StoreError> {
        let held: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM mailbox WHERE recipient = ?1 AND stored_ms >= ?2",
            params![recipient, self.cutoff()],
            |r| r.get(0),
        )?;
        let exists = self
            .conn
            .query_row(
                "SELECT 1 FROM mailbox WHERE recipient = ?1 AND sender = ?2 AND client_msg_id = ?3",
                params![recipient, env.sender, env.client_msg_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Ok(PutOutcome::Stored);
        }
        if u64::try_from(held).unwrap_or(0) >= self.quota {
            return Ok(PutOutcome::QuotaExceeded);
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO mailbox(recipient, sender, client_msg_id, envelope, stored_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                recipient,
                env.sender,
                env.client_msg_id,
                serde_json::to_string(env).unwrap_or_default(),
                now_ms()
            ],
        )?;
        Ok(PutOutcome::Stored)
    }

    /// Unexpired envelopes for a recipient, oldest first.
    pub fn fetch(&self, recipient: &str) -> Result<(Vec<Held>, bool), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, envelope FROM mailbox WHERE recipient = ?1 AND stored_ms >= ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(FETCH_PAGE + 1).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![recipient, self.cutoff(), limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            if let Ok(envelope) = serde_json::from_str(&text) {
                out.push(Held { id, envelope });
            }
        }
        let more = out.len() > FETCH_PAGE;
        out.truncate(FETCH_PAGE);
        Ok((out, more))
    }

    /// Deletes a recipient's acked envelopes.
    pub fn ack(&self, recipient: &str, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.conn.execute(
                "DELETE FROM mailbox WHERE recipient = ?1 AND id = ?2",
                params![recipient, id],
            )?;
        }
        Ok(())
    }

    /// Drops expired envelopes; returns (depth, age in seconds of the oldest).
    pub fn expire(&self) -> Result<(u64, f64), StoreError> {
        self.conn
            .execute("DELETE FROM mailbox WHERE stored_ms < ?1", [self.cutoff()])?;
        let (n, oldest): (i64, Option<i64>) =
            self.conn
                .query_row("SELECT COUNT(*), MIN(stored_ms) FROM mailbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let age = oldest
            .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        Ok((u64::try_from(n).unwrap_or(0), age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{kind, Draft};
    use libp2p::identity::Keypair;

    fn env(key: &Keypair, n: u64) -> Envelope {
        Envelope::sign(
            Draft {
                conversation_id: "c".into(),
                counter: n,
                client_msg_id: uuid::Uuid::new_v4().to_string(),
                lamport: n,
                kind: kind::TEXT.into(),
                body: r#"{"text":"x"}"#.into(),
            },
            key,
        )
    }

    #[test]
    fn held_until_acked_within_quota_and_kept_across_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let key = Keypair::generate_ed25519();
        let first = env(&key, 1);
        {
            let m = MailboxStore::open(dir.path(), Duration::from_secs(60), 2).expect("open");
            assert_eq!(m.put("R", &first).expect("put"), PutOutcome::Stored);
            assert_eq!(
                m.put("R", &first).expect("again"),
                PutOutcome::Stored,
                "a repeat is no new entry"
            );
            assert_eq!(m.put("R", &env(&key, 2)).expect("put"), PutOutcome::Stored);
            assert_eq!(
                m.put("R", &env(&key, 3)).expect("put"),
                PutOutcome::QuotaExceeded
            );
        }
        let m = MailboxStore::open(dir.path(), Duration::from_secs(60), 2).expect("reopen");
        let (held, more) = m.fetch("R").expect("fetch");
        assert_eq!(held.len(), 2);
        assert!(!more);
        assert_eq!(held[0].envelope, first);
        assert!(m.fetch("other").expect("fetch").0.is_empty());
        m.ack("other", &[held[0].id]).expect("ack by someone else");
        assert_eq!(
            m.fetch("R").expect("fetch").0.len(),
            2,
            "only the recipient's ack deletes"
        );
        m.ack("R", &[held[0].id]).expect("ack");
        assert_eq!(m.fetch("R").expect("fetch").0.len(), 1);
        assert_eq!(m.expire().expect("expire").0, 1);
    }

    #[test]
    fn expired_envelopes_are_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let key = Keypair::generate_ed25519();
        let m = MailboxStore::open(dir.path(), Duration::ZERO, 10).expect("open");
        m.put("R", &env(&key, 1)).expect("put");
        m.conn
            .execute("UPDATE mailbox SET stored_ms = stored_ms - 10", [])
            .expect("age it");
        assert!(m.fetch("R").expect("fetch").0.is_empty());
        assert_eq!(m.expire().expect("expire").0, 0);
    }
}
