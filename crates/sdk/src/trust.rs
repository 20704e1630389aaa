//! Which servers the SDK trusts over TLS (`https://`, `wss://`): the public
//! web PKI, plus a private CA given as a PEM file, by
//! [`Client::with_ca_cert`](crate::Client::with_ca_cert) or by the
//! environment variable `CONFAB_CA_CERT` (which the CLI's `--ca-cert`
//! sets). HTTP requests and WebSockets trust the same roots.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};

/// The environment variable naming a PEM file of extra CA certificates.
pub const CA_CERT_ENV: &str = "CONFAB_CA_CERT";

/// Extra trusted roots, ready for reqwest and for the WebSocket's rustls.
#[derive(Clone)]
pub(crate) struct Trust {
    extra: Vec<CertificateDer<'static>>,
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust({} extra roots)", self.extra.len())
    }
}

impl Trust {
    /// The web PKI plus the certificates in the PEM file at `path`.
    pub(crate) fn from_pem_file(path: &Path) -> Result<Trust> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::InvalidInput(format!("CA certificate {}: {e}", path.display()))
        };
        let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(&e))?;
        if extra.is_empty() {
            return Err(bad(&"no certificate in the file"));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &extra {
            roots.add(cert.clone()).map_err(|e| bad(&e))?;
        }
        // The provider is named: a program may link two (ring for this,
        // aws-lc-rs for QUIC), and then rustls will not pick one itself.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Trust {
            extra,
            rustls: Arc::new(config),
        })
    }

    /// The roots named by `CONFAB_CA_CERT`, if it is set. A file that cannot
    /// be read is logged and ignored (connections to a private CA's server
    /// then fail with a certificate error).
    pub(crate) fn from_env() -> Option<Trust> {
        let path = std::env::var_os(CA_CERT_ENV)?;
        match Trust::from_pem_file(Path::new(&path)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring {CA_CERT_ENV}");
                None
            }
        }
    }

    /// Adds the extra roots to a reqwest client being built.
    pub(crate) fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for cert in &self.extra {
            if let Ok(c) = reqwest::Certificate::from_der(cert.as_ref()) {
                builder = builder.add_root_certificate(c);
            }
        }
        builder
    }

    /// The rustls configuration for WebSockets, with these roots.
    pub(crate) fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.rustls.clone()
    }
}
