//! Encrypted attachments: AES-256-GCM under a fresh key per file; the
//! server stores only the ciphertext (docs/protocol.md, "Attachments").

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a receiver needs to fetch and open an attachment (inside the MLS
/// plaintext).
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub key: String,
    pub nonce: String,
    pub sha256: String,
    pub ciphertext: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encrypts `plain` under a fresh key and nonce.
pub(crate) fn seal(plain: &[u8]) -> Result<Sealed> {
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut key);
    rand::thread_rng().fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(&key)
        .map_err(|_| Error::InvalidInput("bad attachment key".into()))?;
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .map_err(|_| Error::InvalidInput("cannot encrypt the attachment".into()))?;
    Ok(Sealed {
        key: B64.encode(key),
        nonce: B64.encode(nonce),
        sha256: hex(&Sha256::digest(&ciphertext)),
        ciphertext,
    })
}

/// Checks the ciphertext's hash, then decrypts it.
pub(crate) fn open(ciphertext: &[u8], key: &str, nonce: &str, sha256: &str) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::Decode(format!("attachment: {why}"));
    if hex(&Sha256::digest(ciphertext)) != sha256.to_ascii_lowercase() {
        return Err(bad("the downloaded bytes do not match the sender's hash"));
    }
    let key = B64.decode(key).map_err(|_| bad("key is not base64"))?;
    let nonce = B64.decode(nonce).map_err(|_| bad("nonce is not base64"))?;
    if nonce.len() != 12 {
        return Err(bad("nonce must be 12 bytes"));
    }
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| bad("key must be 32 bytes"))?;
    cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext)
        .map_err(|_| bad("it does not decrypt with the sender's key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let s = seal("文件内容 file".as_bytes()).expect("seal");
        let back = open(&s.ciphertext, &s.key, &s.nonce, &s.sha256).expect("open");
        assert_eq!(back, "文件内容 file".as_bytes());
        let mut bad = s.ciphertext.clone();
        bad[0] ^= 1;
        assert!(open(&bad, &s.key, &s.nonce, &s.sha256).is_err());
        let other = seal(b"x").expect("seal");
        assert!(open(&s.ciphertext, &other.key, &s.nonce, &s.sha256).is_err());
    }
}
