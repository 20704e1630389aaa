//! Native TLS (issue 15): HTTPS and WSS on one listener from a private CA's
//! certificate, trusted by the SDK and the CLI with `--ca-cert`; plain HTTP
//! to the TLS port fails cleanly; ALPN offers HTTP/2; replacing the files
//! reloads the certificate for new connections while an open WebSocket
//! keeps working.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::support::*;

/// A private CA and a way to issue server certificates for 127.0.0.1.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_path: PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("ca");
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, issuer.pem()).expect("write ca");
        Ca { issuer, pem_path }
    }

    /// Writes a fresh server certificate and key; returns the certificate.
    fn issue(&self, cert: &Path, key: &Path) -> CertificateDer<'static> {
        let params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("params");
        let server_key = KeyPair::generate().expect("key");
        let c = params.signed_by(&server_key, &self.issuer).expect("sign");
        // Written whole, then renamed: the server never reads half a file.
        let write = |path: &Path, text: String| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        };
        write(key, server_key.serialize_pem());
        write(cert, c.pem());
        c.der().clone()
    }
}

/// The certificate and ALPN protocol a fresh TLS connection gets.
async fn handshake(ca: &Ca, addr: &str) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, conn) = tls.get_ref();
    let cert = conn.peer_certificates().expect("certs")[0].clone();
    (cert, conn.alpn_protocol().map(<[u8]>::to_vec))
}

#[tokio::test]
async fn https_and_wss_with_a_private_ca_and_a_reload_that_keeps_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = ca.issue(&cert, &key);
    let data = dir.path().join("data");
    let server = spawn_binary_with(
        &data,
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ],
    )
    .await;
    let base = server.base_url.clone();
    assert!(base.starts_with("https://"), "{base}");
    let addr = base.trim_start_matches("https://").to_owned();

    // The SDK over HTTPS and WSS, trusting the private CA.
    let ann = confab_sdk::Client::new(&base)
        .with_ca_cert(&ca.pem_path)
        .expect("trust the ca");
    ann.register("ann", PASSWORD, None).await.expect("register");
    ann.login("ann", PASSWORD, None).await.expect("login");
    let bob = confab_sdk::Client::new(&base)
        .with_ca_cert(&ca.pem_path)
        .expect("trust the ca");
    bob.register("bob", PASSWORD, None).await.expect("register");
    let bob_user = bob.login("bob", PASSWORD, None).await.expect("login").user;
    let conv = direct(&ann, &bob_user).await;
    let mut b = connect(&bob).await;
    let a = connect(&ann).await;
    a.send_text(conv.id, "over wss").await.expect("send");
    assert_eq!(
        b.next_message(WAIT).await.expect("bob gets it").body["text"],
        "over wss"
    );

    // Without the CA the same server is refused.
    let untrusting = confab_sdk::Client::new(&base);
    assert!(untrusting.register("cat", PASSWORD, None).await.is_err());

    // The CLI with --ca-cert (and refused without).
    let session = dir.path().join("session.json");
    let mut register = cli(&base, &session);
    register.args(["register", "dan", "--password", PASSWORD, "--ca-cert"]);
    register.arg(&ca.pem_path);
    cli_ok(register).await;
    let mut refused = cli(&base, &session);
    refused.args(["register", "eve", "--password", PASSWORD]);
    let out = refused.output().await.expect("run");
    assert!(
        !out.status.success(),
        "a private CA is not trusted by default"
    );

    // Plain HTTP to the TLS port fails cleanly, and TLS still works after.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err() || !plain.is_ok_and(|r| r.status().is_success()));
    let (served, alpn) = handshake(&ca, &addr).await;
    assert_eq!(served, first);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "HTTP/2 by ALPN");

    // Replace the files: new connections get the new certificate...
    let second = ca.issue(&cert, &key);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if handshake(&ca, &addr).await.0 == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and the WebSocket opened before the reload keeps working.
    a.send_text(conv.id, "after the reload")
        .await
        .expect("send");
    assert_eq!(
        b.next_message(WAIT).await.expect("still delivered").body["text"],
        "after the reload"
    );
}

/// Writes a server certificate for 127.0.0.1 and returns (cert, key) PEM.
fn server_pem(ca: &Ca) -> (String, String) {
    let params =
        CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn the_cluster_store_speaks_tls_to_postgresql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path());
    let (cert, key) = server_pem(&ca);
    let pg = confab_testkit::Postgres::start_with_tls(&cert, &key)
        .await
        .expect("postgres with tls");
    let ca_path = ca.pem_path.display().to_string();
    // verify-full: the certificate must chain to our CA and name the host.
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca_path}", pg.url());
    let app = spawn_app_with(|c| c.database = Some(url)).await;
    let (ann, _) = app.user("ann").await;
    let (_, bob) = app.user("bob").await;
    let conv = direct(&ann, &bob).await;
    ann.send_http(
        conv.id,
        "tls-1",
        confab_sdk::MessageKind::Text,
        serde_json::json!({"text": "over tls"}),
    )
    .await
    .expect("a send stored over tls");

    // A CA that did not sign the server's certificate is refused.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Ca::new(other_dir.path());
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        other.pem_path.display()
    );
    let refused = confab_store::PostgresStore::open_with(&wrong, 1, Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "verify-full against the wrong CA must fail"
    );
    let required = format!("{}?sslmode=require", pg.url());
    confab_store::PostgresStore::open_with(&required, 1, Duration::from_secs(5))
        .await
        .expect("sslmode=require");
}
