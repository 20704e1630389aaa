//! The openmls provider: RustCrypto for the cryptography and openmls's
//! in-memory storage, which [`Snapshot`] turns into bytes for the session
//! dir (no second SQLite library in the workspace).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};

/// Crypto and storage for openmls.
#[derive(Default)]
pub(crate) struct Provider {
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

/// openmls's storage as key/value pairs in base64.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot(Vec<(String, String)>);

impl Provider {
    /// A provider holding what `snapshot` saved.
    pub(crate) fn restore(snapshot: &Snapshot) -> Provider {
        let p = Provider::default();
        if let Ok(mut values) = p.storage.values.write() {
            for (k, v) in &snapshot.0 {
                if let (Ok(k), Ok(v)) = (B64.decode(k), B64.decode(v)) {
                    values.insert(k, v);
                }
            }
        }
        p
    }

    /// Everything openmls stored, to be written out.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut pairs: Vec<(String, String)> = match self.storage.values.read() {
            Ok(values) => values
                .iter()
                .map(|(k, v)| (B64.encode(k), B64.encode(v)))
                .collect(),
            Err(_) => Vec::new(),
        };
        pairs.sort();
        Snapshot(pairs)
    }
}
