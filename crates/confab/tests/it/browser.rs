//! The browser app: how the server serves it, and the end-to-end story in
//! real headless Chromium (e2e/chat.test.mjs, driven by playwright-core)
//! against a real server booted here.
//!
//! `scripts/test` installs Chromium, Node.js and e2e/node_modules when they
//! are missing; run alone, this test says what to install instead of
//! skipping.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{spawn_app, spawn_app_with};
use reqwest::header;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

#[tokio::test]
async fn the_app_is_served_from_the_binary_under_a_strict_policy() {
    let app = spawn_app().await;
    let http = app.http();

    let index = http
        .get(format!("{}/", app.base_url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("csp");
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        "frame-ancestors 'none'",
        &format!("ws://{}", app.addr),
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let html = index.text().await.expect("body");

    // No inline script or inline style anywhere in the page: every script
    // is a module loaded from the app's own files.
    let lower = html.to_ascii_lowercase();
    let mut scripts = 0;
    for (i, _) in lower.match_indices("<script") {
        let tag_end = i + lower[i..].find('>').expect("tag end");
        let tag = &lower[i..=tag_end];
        assert!(tag.contains("src="), "inline script: {tag}");
        assert!(lower[tag_end + 1..].starts_with("</script>"), "script body");
        scripts += 1;
    }
    assert!(scripts >= 1, "the page loads no script");
    assert!(!lower.contains(" style="), "inline style attribute");
    assert!(!lower.contains("<style"), "inline style element");
    // No inline event handlers (` onclick=`, ` onload=`, …) either.
    for (i, _) in lower.match_indices(" on") {
        let name: String = lower[i + 3..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        let after = &lower[i + 3 + name.len()..];
        assert!(
            name.is_empty() || !after.trim_start().starts_with('='),
            "inline event handler on{name}"
        );
    }

    // The module the page loads, with a validator for revalidation.
    let src = lower
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("script src")
        .to_string();
    let js = http
        .get(format!("{}{src}", app.base_url))
        .send()
        .await
        .expect("GET script");
    assert_eq!(js.status(), 200, "{src}");
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let etag = js.headers()[header::ETAG].clone();
    let again = http
        .get(format!("{}{src}", app.base_url))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("GET script again");
    assert_eq!(again.status(), 304);

    // Nothing outside the app's folder, and the API's 404s stay JSON.
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/.hidden",
        "/nope.js",
    ] {
        let r = http
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 404, "{path}");
    }
    let api = http
        .get(format!("{}/v1/no-such-thing", app.base_url))
        .send()
        .await
        .expect("GET");
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = api.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "not_found");
    let post = http
        .post(format!("{}/", app.base_url))
        .send()
        .await
        .expect("POST /");
    assert_eq!(post.status(), 404);
    app.stop().await;
}

/// The app's pure modules (reorder/dedup buffer, outbox, the MLS layer) under
/// Node's test runner: e2e/unit/*.test.mjs.
#[tokio::test]
async fn the_apps_delivery_logic_passes_its_unit_tests() {
    let output = tokio::process::Command::new("node")
        .args(["--test", "e2e/unit/"])
        .current_dir(repo_root())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node (Node.js) on PATH: run scripts/test, which installs it");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "e2e/unit failed");
    assert!(stdout.contains("# pass "), "no tests ran");
    assert!(stdout.contains("# fail 0"), "a unit test failed");
}

/// e2e/chat.test.mjs: two users in two browser contexts sign up, befriend,
/// chat both ways, send an image and a voice note, see typing and read
/// ticks, send while offline (delivered once and in order), reload.
/// e2e/groups.test.mjs: three users, a group, adding and removing members,
/// mentions, edits and deletions seen live. e2e/a11y.test.mjs: an axe-core
/// audit of the main screens and a keyboard-only session. Screenshots land in
/// `target/tmp/e2e/`.
#[tokio::test]
async fn people_chat_in_real_browsers() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    let _ = std::fs::remove_dir_all(&out);
    let app = spawn_app().await;
    run_e2e(
        &app.base_url,
        &out,
        &[
            "e2e/chat.test.mjs",
            "e2e/groups.test.mjs",
            "e2e/a11y.test.mjs",
        ],
    )
    .await;
    let shots = std::fs::read_dir(&out)
        .expect("screenshots")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(shots >= 5, "expected screenshots in {}", out.display());
    app.stop().await;
}

/// e2e/tokens.test.mjs, against a server whose access tokens live two
/// seconds: two tabs of one browser refresh at the same moments, over and
/// over, and neither is signed out (refresh tokens rotate; presenting a
/// spent one revokes the device).
#[tokio::test]
async fn tabs_share_one_session_through_token_refreshes() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-tokens");
    let app = spawn_app_with(|c| c.auth.access_ttl_s = 2).await;
    run_e2e(&app.base_url, &out, &["e2e/tokens.test.mjs"]).await;
    app.stop().await;
}

/// e2e/e2ee.test.mjs: end-to-end encrypted conversations (MLS, ts-mls in
/// Chromium). Two users chat in an encrypted direct chat (Chinese text, an
/// image uploaded as AES-GCM ciphertext), the server's history holds only
/// ciphertext, safety numbers agree, a reload keeps history and keys
/// (IndexedDB), search finds decrypted text, an encrypted group of three,
/// a removal; then interop with the `confab` CLI (openmls): a group made
/// by the CLI that the browser joins, and one made in the browser that the
/// CLI joins, messages both ways in each.
///
/// The server runs as its own process with debug logging; afterwards its
/// data directory (database, WAL, uploads) and log hold none of the
/// plaintexts the test sent encrypted, and do hold the groups' titles
/// (which the server is meant to see: the scan would find text).
#[tokio::test]
async fn people_chat_end_to_end_encrypted_in_real_browsers() {
    use base64::Engine as _;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-e2ee");
    let data = tempfile::tempdir().expect("tempdir");
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut server = crate::e2ee::spawn_logging_binary(data.path(), log.path()).await;
    let plaintexts = out.join("e2ee-plaintexts.json");
    let _ = std::fs::remove_file(&plaintexts);
    run_e2e_with(
        &server.base_url,
        &out,
        &["e2e/e2ee.test.mjs"],
        &[("CONFAB_CLI", env!("CARGO_BIN_EXE_confab"))],
    )
    .await;
    let _ = server.child.kill().await;

    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plaintexts).expect("e2ee-plaintexts.json"))
            .expect("json");
    let needles = |key: &str| -> Vec<Vec<u8>> {
        list[key]
            .as_array()
            .expect("a list")
            .iter()
            .map(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().expect("base64 text"))
                    .expect("base64")
            })
            .collect()
    };
    let mut everything = crate::e2ee::all_bytes(data.path());
    everything.extend(std::fs::read(log.path()).expect("log"));
    let secret = needles("secret");
    assert!(secret.len() >= 10, "{list}");
    for needle in &secret {
        assert!(
            !crate::e2ee::contains(&everything, needle),
            "found {:?} in the server's files or log",
            String::from_utf8_lossy(needle)
        );
    }
    for needle in needles("visible") {
        assert!(
            crate::e2ee::contains(&everything, &needle),
            "the scan did not find {:?}",
            String::from_utf8_lossy(&needle)
        );
    }
}

/// A private coturn on loopback (shared-secret auth), stopped on drop.
struct Coturn {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Coturn {
    async fn start(secret: &str) -> Coturn {
        use tokio::io::AsyncBufReadExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // A free port: taken from the kernel, released for coturn.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free udp port")
            .port();
        let mut child = tokio::process::Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=confab.test",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                // Both browsers and the relay are on loopback here.
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
            ])
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg(format!("--db={}", dir.path().join("turndb").display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "turnserver (Debian package coturn) on PATH: run scripts/test, which installs it",
            );
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Total General servers") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "coturn did not start");
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Coturn {
            _child: child,
            _dir: dir,
            port,
        }
    }
}

/// e2e/calls.test.mjs: video calls between real browsers with fake camera
/// and microphone (media measured with getStats), hang-up, decline, missed,
/// busy, two tabs of the callee, media relayed through a real coturn, and
/// a server with the wrong TURN secret. Screenshots land in
/// `target/tmp/e2e-calls/`.
#[tokio::test]
async fn people_call_in_real_browsers() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-calls");
    let _ = std::fs::remove_dir_all(&out);
    let turn = Coturn::start("e2e-turn-secret").await;
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", turn.port);
    let with_turn = |secret: &'static str, url: String| {
        move |c: &mut confab_server::Config| {
            c.calls.turn_urls = vec![url];
            c.calls.turn_secret = Some(confab_server::config::Secret::new(secret));
            c.calls.turn_ttl_s = 600;
            c.chat.call_ring_timeout_s = 8;
        }
    };
    let app = spawn_app_with(with_turn("e2e-turn-secret", turn_url.clone())).await;
    let bad = spawn_app_with(with_turn("not-the-secret", turn_url)).await;
    run_e2e_with(
        &app.base_url,
        &out,
        &["e2e/calls.test.mjs"],
        &[("CONFAB_URL_BAD", bad.base_url.as_str())],
    )
    .await;
    app.stop().await;
    bad.stop().await;
}

/// Runs e2e test files with Node's test runner against `base_url`, saving
/// screenshots in `out`; fails with their output when they fail.
async fn run_e2e(base_url: &str, out: &Path, files: &[&str]) {
    run_e2e_with(base_url, out, files, &[]).await;
}

/// [`run_e2e`] with more environment variables for the test files.
pub(crate) async fn run_e2e_with(base_url: &str, out: &Path, files: &[&str], env: &[(&str, &str)]) {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/test (it installs Debian's chromium) or set CHROMIUM"
    );
    assert!(
        root.join("e2e/node_modules/playwright-core/package.json")
            .exists(),
        "e2e/node_modules is missing: run scripts/test (or `npm ci --prefix e2e`)"
    );
    std::fs::create_dir_all(out).expect("screenshot folder");
    let mut child = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .args(files)
        .current_dir(&root)
        .env("CONFAB_URL", base_url)
        .env("E2E_OUT", out)
        .env("CHROMIUM", &chromium)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js) on PATH: run scripts/test, which installs it");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let collect = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut r = r;
            let mut s = String::new();
            let _ = r.read_to_string(&mut s).await;
            s
        })
    };
    let out_task = collect(Box::new(stdout));
    let err_task = collect(Box::new(stderr));
    let status = tokio::time::timeout(Duration::from_secs(240), child.wait())
        .await
        .expect("the browser tests finished within 4 minutes")
        .expect("node ran");
    let stdout = out_task.await.unwrap_or_default();
    let stderr = err_task.await.unwrap_or_default();
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(status.success(), "{files:?} failed: {status}");
}
