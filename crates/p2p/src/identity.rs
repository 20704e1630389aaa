//! The device key: an Ed25519 key pair kept in the peer's data dir (file
//! mode 0600). Its libp2p `PeerId` is the device id (DESIGN §2).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

/// File name of the device key inside the data dir.
pub const KEY_FILE: &str = "device.key";

/// Why the device key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("device key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file exists but does not hold an Ed25519 key.
    #[error("device key file {0} is not an Ed25519 key in libp2p's protobuf encoding; move it away to make a new one")]
    Invalid(String),
    /// Others than the owner can read the key file.
    #[error("device key file {0} is readable by others (mode {1:o}); run `chmod 600` on it")]
    TooOpen(String, u32),
}

/// The raw 32 bytes of a device key's Ed25519 public half: what a server
/// account stores as the device's `device_public_key` (base64).
pub fn ed25519_public(key: &Keypair) -> Option<[u8; 32]> {
    Some(key.public().try_into_ed25519().ok()?.to_bytes())
}

/// The PeerId of a raw 32-byte Ed25519 public key (a device key as a
/// server hands it out); `None` when the bytes are not one.
pub fn peer_of_ed25519(raw: &[u8]) -> Option<libp2p::PeerId> {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(raw).ok()?;
    Some(libp2p::identity::PublicKey::from(public).to_peer_id())
}

/// Loads the device key from `data_dir/device.key`, making a new one (and
/// the data dir) the first time. The file is created with mode 0600 before
/// any key byte is written into it.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io {
        path: shown.clone(),
        source,
    };
    if path.exists() {
        let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::TooOpen(shown, mode));
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        let key = Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| IdentityError::Invalid(shown.clone()))?;
        if key.clone().try_into_ed25519().is_err() {
            return Err(IdentityError::Invalid(shown));
        }
        return Ok(key);
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|_| IdentityError::Invalid(shown.clone()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_with_mode_0600_and_loaded_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(dir.path()).expect("load");
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path()).expect("create");
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::TooOpen(_, 0o644))
        ));
    }
}
