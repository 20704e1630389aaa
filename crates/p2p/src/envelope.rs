//! Envelopes: every message, receipt and group change a device sends,
//! signed by the device's Ed25519 key (its PeerId) over a canonical byte
//! string, and the checks a receiver makes before storing one.
//!
//! Wire form: one JSON object (docs/protocol.md, "P2P"):
//! `{"v":1,"conversation_id","sender","counter","client_msg_id","lamport","kind","body","sig"}`
//! where `body` is the message body as JSON *text* (a string, so nobody has
//! to re-serialise JSON identically to check a signature) and `sig` is the
//! base64 Ed25519 signature of [`Envelope::signed_bytes`]: the ASCII domain
//! `confab-envelope-v1` and then each field as a 4-byte big-endian length
//! followed by its UTF-8 bytes, in this order: conversation_id, sender,
//! counter (decimal), client_msg_id, lamport (decimal), kind, body.

use base64::Engine;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// Domain separation for envelope signatures.
pub const SIGNING_DOMAIN: &[u8] = b"confab-envelope-v1";

/// The largest encoded envelope a peer accepts unless configured otherwise.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Envelope kinds: the message kinds of DESIGN §3 plus the P2P control kinds.
pub mod kind {
    /// `{"text": str}`
    pub const TEXT: &str = "text";
    /// `{"media_id", "width", "height", "caption"?}`; media_id is the SHA-256.
    pub const IMAGE: &str = "image";
    /// `{"media_id", "duration_ms"}`
    pub const VOICE: &str = "voice";
    /// `{"media_id", "name", "size", "mime"}`; media_id is the file's SHA-256 (hex).
    pub const FILE: &str = "file";
    /// `{"ciphertext": base64, …}`
    pub const ENCRYPTED: &str = "encrypted";
    /// `{"of": [client_msg_id], "state": "delivered"|"read"}`
    pub const RECEIPT: &str = "receipt";
    /// `{"title", "members": [PeerId]}`: the sender is the group's admin.
    pub const GROUP_CREATE: &str = "group_create";
    /// `{"add": [PeerId], "remove": [PeerId]}`: from an admin only.
    pub const GROUP_CHANGE: &str = "group_change";
    /// `{}`: the sender is typing now. Ephemeral: counter and lamport 0,
    /// sent only to connected members, never stored, queued or caught up.
    pub const TYPING: &str = "typing";
    /// Every kind a peer accepts.
    pub const ALL: &[&str] = &[
        TEXT,
        IMAGE,
        VOICE,
        FILE,
        ENCRYPTED,
        RECEIPT,
        GROUP_CREATE,
        GROUP_CHANGE,
        TYPING,
    ];
}

/// A signed envelope as it travels and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, 1.
    pub v: u32,
    /// The conversation (direct: [`crate::direct_conversation_id`]; group: a UUID).
    pub conversation_id: String,
    /// The sending device's PeerId (base58).
    pub sender: String,
    /// Per (conversation, sender) counter: 1, 2, 3, … with no gaps.
    pub counter: u64,
    /// The sender's idempotency key (UUID).
    pub client_msg_id: String,
    /// Lamport clock: members order by (lamport, sender).
    pub lamport: u64,
    /// One of [`kind::ALL`].
    pub kind: String,
    /// The body as JSON text.
    pub body: String,
    /// Base64 Ed25519 signature of [`Envelope::signed_bytes`].
    #[serde(default)]
    pub sig: String,
}

/// Why an envelope was refused. It is stored nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Larger than the configured limit.
    #[error("envelope is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not an envelope, or a field is out of range.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// No signature.
    #[error("envelope is not signed")]
    Unsigned,
    /// The signature does not match the sender's key and the fields.
    #[error("envelope signature does not verify against its sender")]
    BadSignature,
    /// The sender is not a contact and not a member of the conversation.
    #[error("sender {0} is unknown here")]
    UnknownSender(String),
    /// The sender is known but not a member of the conversation.
    #[error("sender {0} is not a member of conversation {1}")]
    NotMember(String, String),
    /// The envelope came from someone other than its sender without being
    /// a catch-up answer (direct deliveries must come from the sender).
    #[error("envelope from {0} was delivered by another peer")]
    WrongOrigin(String),
}

impl Refusal {
    /// The snake_case code sent back in a refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::UnknownSender(_) => "unknown_sender",
            Refusal::NotMember(..) => "not_member",
            Refusal::WrongOrigin(_) => "wrong_origin",
        }
    }
}

/// The fields of a new envelope before it is signed.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The conversation.
    pub conversation_id: String,
    /// The sender's counter for it.
    pub counter: u64,
    /// Idempotency key.
    pub client_msg_id: String,
    /// The Lamport time.
    pub lamport: u64,
    /// Kind.
    pub kind: String,
    /// Body as JSON text.
    pub body: String,
}

impl Envelope {
    /// The bytes the signature covers (see the module docs).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let counter = self.counter.to_string();
        let lamport = self.lamport.to_string();
        let fields: [&str; 7] = [
            &self.conversation_id,
            &self.sender,
            &counter,
            &self.client_msg_id,
            &lamport,
            &self.kind,
            &self.body,
        ];
        let mut out = Vec::with_capacity(
            SIGNING_DOMAIN.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>(),
        );
        out.extend_from_slice(SIGNING_DOMAIN);
        for field in fields {
            // Fields are bounded by the envelope size limit, far below 4 GiB.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// Signs a draft with the device key.
    pub fn sign(draft: Draft, key: &Keypair) -> Envelope {
        let mut env = Envelope {
            v: 1,
            conversation_id: draft.conversation_id,
            sender: key.public().to_peer_id().to_base58(),
            counter: draft.counter,
            client_msg_id: draft.client_msg_id,
            lamport: draft.lamport,
            kind: draft.kind,
            body: draft.body,
            sig: String::new(),
        };
        // Signing with an Ed25519 key cannot fail (only RSA signing can).
        let sig = key.sign(&env.signed_bytes()).unwrap_or_default();
        env.sig = base64::engine::general_purpose::STANDARD.encode(sig);
        env
    }

    /// The sender as a PeerId (checked by [`Envelope::verify`]).
    pub fn sender_peer(&self) -> Result<PeerId, Refusal> {
        self.sender
            .parse()
            .map_err(|_| Refusal::Malformed("sender is not a PeerId".into()))
    }

    /// The encoded (wire) form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and verifies an envelope from its wire form: size first,
    /// then shape, then signature. Membership is the store's check.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Envelope, Refusal> {
        if bytes.len() > max_bytes {
            return Err(Refusal::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        env.verify(max_bytes)?;
        Ok(env)
    }

    /// Checks shape, size and signature of an already parsed envelope.
    pub fn verify(&self, max_bytes: usize) -> Result<(), Refusal> {
        let size = self.encode().len();
        if size > max_bytes {
            return Err(Refusal::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        if self.v != 1 {
            return Err(Refusal::Malformed(format!("unknown version {}", self.v)));
        }
        if self.kind == kind::TYPING {
            // Ephemeral: it never takes a place in the sender's counters.
            if self.counter != 0 || self.lamport != 0 {
                return Err(Refusal::Malformed(
                    "typing envelopes have counter and lamport 0".into(),
                ));
            }
        } else if self.counter == 0 || self.lamport == 0 {
            return Err(Refusal::Malformed("counter and lamport start at 1".into()));
        }
        if self.conversation_id.is_empty() || self.conversation_id.len() > 128 {
            return Err(Refusal::Malformed(
                "conversation_id must be 1-128 bytes".into(),
            ));
        }
        if uuid::Uuid::parse_str(&self.client_msg_id).is_err() {
            return Err(Refusal::Malformed("client_msg_id must be a UUID".into()));
        }
        if !kind::ALL.contains(&self.kind.as_str()) {
            return Err(Refusal::Malformed(format!("unknown kind {:?}", self.kind)));
        }
        match serde_json::from_str::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(Refusal::Malformed("body must be a JSON object".into())),
        }
        if self.sig.is_empty() {
            return Err(Refusal::Unsigned);
        }
        let peer = self.sender_peer()?;
        let key = public_key_of(&peer)
            .ok_or_else(|| Refusal::Malformed("sender PeerId carries no Ed25519 key".into()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.sig)
            .map_err(|_| Refusal::BadSignature)?;
        if !key.verify(&self.signed_bytes(), &sig) {
            return Err(Refusal::BadSignature);
        }
        Ok(())
    }

    /// The body parsed as JSON (verified envelopes always have an object).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The Ed25519 public key inlined in a PeerId (identity multihash), if any.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let hash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if hash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(hash.digest()).ok()?;
    key.clone().try_into_ed25519().ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(body: &str) -> Draft {
        Draft {
            conversation_id: "c1".into(),
            counter: 1,
            client_msg_id: uuid::Uuid::new_v4().to_string(),
            lamport: 1,
            kind: kind::TEXT.into(),
            body: body.into(),
        }
    }

    #[test]
    fn a_signed_envelope_verifies_after_a_round_trip() {
        let key = Keypair::generate_ed25519();
        let env = Envelope::sign(draft(r#"{"text":"hi"}"#), &key);
        let back = Envelope::decode(&env.encode(), DEFAULT_MAX_ENVELOPE_BYTES).expect("valid");
        assert_eq!(back, env);
        assert_eq!(back.sender_peer().expect("peer"), key.public().to_peer_id());
    }

    #[test]
    fn tampered_unsigned_foreign_and_oversized_envelopes_are_refused() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let env = Envelope::sign(draft(r#"{"text":"hi"}"#), &key);
        type Case = (&'static str, Box<dyn Fn(&mut Envelope)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "body",
                Box::new(|e| e.body = r#"{"text":"ho"}"#.into()),
                "bad_signature",
            ),
            ("counter", Box::new(|e| e.counter = 2), "bad_signature"),
            ("lamport", Box::new(|e| e.lamport = 9), "bad_signature"),
            (
                "conversation",
                Box::new(|e| e.conversation_id = "c2".into()),
                "bad_signature",
            ),
            (
                "kind",
                Box::new(|e| e.kind = kind::FILE.into()),
                "bad_signature",
            ),
            ("unsigned", Box::new(|e| e.sig.clear()), "unsigned"),
            (
                "garbage sig",
                Box::new(|e| e.sig = "!!".into()),
                "bad_signature",
            ),
            (
                "unknown kind",
                Box::new(|e| e.kind = "nope".into()),
                "malformed",
            ),
            (
                "body not object",
                Box::new(|e| e.body = "[1]".into()),
                "malformed",
            ),
            ("counter zero", Box::new(|e| e.counter = 0), "malformed"),
            (
                "sender not a peer",
                Box::new(|e| e.sender = "x".into()),
                "malformed",
            ),
        ];
        for (name, tamper, code) in cases {
            let mut bad = env.clone();
            tamper(&mut bad);
            let err = Envelope::decode(&bad.encode(), DEFAULT_MAX_ENVELOPE_BYTES).expect_err(name);
            assert_eq!(err.code(), code, "{name}: {err}");
        }
        // Signed by someone else but claiming to be `key`.
        let mut forged = Envelope::sign(draft(r#"{"text":"hi"}"#), &other);
        forged.sender = key.public().to_peer_id().to_base58();
        assert_eq!(
            Envelope::decode(&forged.encode(), DEFAULT_MAX_ENVELOPE_BYTES)
                .expect_err("forged")
                .code(),
            "bad_signature"
        );
        // Over an explicit limit, before any parsing.
        let big = Envelope::sign(
            draft(&format!(r#"{{"text":"{}"}}"#, "a".repeat(2000))),
            &key,
        );
        let err = Envelope::decode(&big.encode(), 1024).expect_err("too big");
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn signed_bytes_are_the_documented_layout() {
        let env = Envelope {
            v: 1,
            conversation_id: "c".into(),
            sender: "S".into(),
            counter: 12,
            client_msg_id: "u".into(),
            lamport: 3,
            kind: "text".into(),
            body: "{}".into(),
            sig: String::new(),
        };
        let mut want = b"confab-envelope-v1".to_vec();
        for f in ["c", "S", "12", "u", "3", "text", "{}"] {
            want.extend_from_slice(&(f.len() as u32).to_be_bytes());
            want.extend_from_slice(f.as_bytes());
        }
        assert_eq!(env.signed_bytes(), want);
    }

    #[test]
    fn typing_envelopes_take_no_counter_and_others_must() {
        let key = Keypair::generate_ed25519();
        let typing = |counter, lamport| {
            Envelope::sign(
                Draft {
                    counter,
                    lamport,
                    kind: kind::TYPING.into(),
                    ..draft("{}")
                },
                &key,
            )
        };
        typing(0, 0)
            .verify(DEFAULT_MAX_ENVELOPE_BYTES)
            .expect("ephemeral typing");
        for (c, l) in [(1, 1), (0, 1), (1, 0)] {
            let err = typing(c, l).verify(DEFAULT_MAX_ENVELOPE_BYTES);
            assert!(
                matches!(err, Err(Refusal::Malformed(_))),
                "{c} {l}: {err:?}"
            );
        }
        let text = Envelope::sign(
            Draft {
                counter: 0,
                lamport: 0,
                ..draft(r#"{"text":"hi"}"#)
            },
            &key,
        );
        assert!(matches!(
            text.verify(DEFAULT_MAX_ENVELOPE_BYTES),
            Err(Refusal::Malformed(_))
        ));
    }
}
