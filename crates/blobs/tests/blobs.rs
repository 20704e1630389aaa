//! The blob stores against the same checks: the local directory, and S3
//! through a real S3-compatible server (moto in server mode, started here
//! on a free port and killed after; `scripts/test` installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_blobs::{BlobError, BlobStore, LocalBlobs, S3Blobs};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

fn key_of(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn read_all(
    store: &dyn BlobStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut s = store.get(key, range).await.expect("get");
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

async fn exercise(store: &dyn BlobStore, big: usize) {
    let small = b"hello blobs".to_vec();
    let k = key_of(&small);
    assert_eq!(store.head(&k).await.expect("head"), None);
    assert!(matches!(
        store.get(&k, None).await,
        Err(BlobError::NotFound)
    ));

    // From a stream, twice (content addressed: the second is a no-op).
    for _ in 0..2 {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"blobs")),
        ];
        store
            .put_stream(&k, futures_util::stream::iter(chunks).boxed())
            .await
            .expect("put_stream");
    }
    assert_eq!(
        store.head(&k).await.expect("head"),
        Some(small.len() as u64)
    );
    assert_eq!(read_all(store, &k, None).await, small);
    assert_eq!(read_all(store, &k, Some(6..11)).await, b"blobs");
    assert_eq!(read_all(store, &k, Some(6..100)).await, b"blobs");
    assert!(matches!(
        store.get(&k, Some(11..12)).await,
        Err(BlobError::BadRange)
    ));

    // From a file, large enough to take the multipart path on S3.
    let data: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
    let kb = key_of(&data);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &data).expect("write");
    store.put_file(&kb, &path).await.expect("put_file");
    assert_eq!(store.head(&kb).await.expect("head"), Some(big as u64));
    let back = read_all(store, &kb, None).await;
    assert_eq!(key_of(&back), kb);
    let mid = read_all(store, &kb, Some(1000..5000)).await;
    assert_eq!(mid, data[1000..5000]);

    store.delete(&k).await.expect("delete");
    store.delete(&k).await.expect("delete again");
    assert_eq!(store.head(&k).await.expect("head"), None);
    assert!(store.put_file("../evil", &path).await.is_err());
}

#[tokio::test]
async fn local_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalBlobs::open(dir.path()).await.expect("open");
    exercise(&store, 3 * 1024 * 1024).await;
    // No temporary files left behind.
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(tmp.is_empty());
}

/// moto's S3 server on a free port; killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with moto[server] (scripts/test installs it)");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if http(port, &req).is_some_and(|r| r.starts_with("HTTP/1.1")) {
            return moto;
        }
        assert!(
            Instant::now() < deadline,
            "moto did not start on port {port}: is moto[server] installed? (scripts/test installs it)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn s3_blobs_against_moto() {
    let moto = start_moto();
    let port = moto.port;
    let created = http(
        port,
        &format!(
            "PUT /confab-test HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .expect("create bucket");
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = [
        ("aws_endpoint_url", endpoint.as_str()),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    let store = S3Blobs::from_url("s3://confab-test/media", &opts).expect("s3");
    // Over the single-PUT size: a multipart upload.
    exercise(&store, 9 * 1024 * 1024).await;
}
