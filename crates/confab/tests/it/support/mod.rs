//! The one test harness: `spawn_app()` boots the real server on port 0 with
//! a fresh data directory; tests talk to it over real sockets through the
//! SDK, like users would.
#![allow(dead_code)]

mod cli;
mod frames;

pub use cli::{cli, cli_ok, cli_register_and_login};
pub use frames::{expect_error, hello, raw_connect};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use confab_sdk::{
    Client, ConnectOptions, Connection, Conversation, ConversationId, ErrorCode, HistoryQuery,
    MessageRecord, User,
};
use confab_server::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long tests wait for any one expected event.
pub const WAIT: Duration = Duration::from_secs(10);
/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Settings that keep tests fast: cheap password hashing, generous rates.
pub fn test_config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    c.auth.argon2_memory_kib = 64;
    c.auth.argon2_iterations = 1;
    // Every test user registers from 127.0.0.1.
    c.auth.registrations_per_hour = 1_000_000;
    c.limits.send_rate_per_s = 100_000.0;
    c.limits.send_burst = 100_000.0;
    c.shutdown_grace_s = 5;
    c
}

/// Boots a server with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Boots a server after letting the test adjust the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = spawn_app_in(tmp.path(), adjust).await;
    app._tmp = Some(tmp);
    app
}

/// Boots a server on an existing data directory (for restart tests).
pub async fn spawn_app_in(dir: &Path, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    spawn_app_on(listener, dir, adjust).await
}

/// Boots a server on a listener the test bound (so it knows the address
/// before the server starts, e.g. for a redirect URI registered elsewhere).
pub async fn spawn_app_on(
    listener: tokio::net::TcpListener,
    dir: &Path,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = test_config();
    config.data_dir = dir.to_path_buf();
    adjust(&mut config);
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = confab_server::run(listener, config, token).await {
            panic!("server failed: {e}");
        }
    });
    TestApp {
        addr,
        base_url: format!("http://{addr}"),
        data_dir: dir.to_path_buf(),
        shutdown,
        task: Some(task),
        _tmp: None,
    }
}

impl TestApp {
    /// An SDK client with no session.
    pub fn client(&self) -> Client {
        Client::new(&self.base_url)
    }

    /// Registers `name` and logs in one device.
    pub async fn user(&self, name: &str) -> (Client, User) {
        let client = self.client();
        client
            .register(name, PASSWORD, None)
            .await
            .expect("register");
        let session = client
            .login(name, PASSWORD, Some("test device"))
            .await
            .expect("login");
        (client, session.user)
    }

    /// Another logged-in device of an existing user.
    pub async fn device(&self, name: &str) -> Client {
        let client = self.client();
        client
            .login(name, PASSWORD, Some("second device"))
            .await
            .expect("login");
        client
    }

    /// A raw HTTP client for requests the SDK would never make.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Connects and waits until the first sync is complete.
pub async fn connect(client: &Client) -> Connection {
    let mut conn = client.connect(ConnectOptions::default()).expect("connect");
    conn.wait_synced(WAIT).await.expect("synced");
    conn
}

/// The direct conversation between the client's user and `other`.
pub async fn direct(client: &Client, other: &User) -> Conversation {
    client
        .direct_conversation(other.id)
        .await
        .expect("direct conversation")
}

/// Asserts that a call was refused with this HTTP status and error code.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: confab_sdk::Result<T>,
    status: u16,
    code: ErrorCode,
    what: &str,
) {
    match result {
        Err(e) => assert_eq!(
            (e.status(), e.code()),
            (Some(status), Some(code)),
            "{what}: got {e}"
        ),
        Ok(v) => panic!("{what}: expected {status} {code:?}, got Ok({v:?})"),
    }
}

/// The whole visible history of a conversation, oldest first.
pub async fn all_history(client: &Client, id: ConversationId) -> Vec<MessageRecord> {
    client
        .history(id, HistoryQuery::after(0, 200))
        .await
        .expect("history")
        .messages
}

/// The text of a text message ("" for other kinds).
pub fn text(m: &MessageRecord) -> &str {
    m.body["text"].as_str().unwrap_or_default()
}

/// Makes two logged-in users friends: `a` asks, `b` asks back (accepts).
pub async fn befriend(a: &Client, b: &Client) {
    let a_id = a.session().expect("session").user.id;
    let b_id = b.session().expect("session").user.id;
    a.send_friend_request(b_id, None).await.expect("ask");
    b.send_friend_request(a_id, None).await.expect("accept");
}

/// A `confab serve` child process (for crash tests).
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base_url: String,
}

/// Starts the real binary on a free port with the given data directory.
pub async fn spawn_binary(data_dir: &Path) -> ServerProcess {
    spawn_binary_with(data_dir, &[]).await
}

/// Starts the real binary with extra `serve` flags (cluster settings).
pub async fn spawn_binary_with(data_dir: &Path, extra: &[&str]) -> ServerProcess {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args([
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
            "--registrations-per-hour",
            "1000000",
            "--send-rate",
            "100000",
            "--send-burst",
            "100000",
        ])
        .args(extra)
        .env("CONFAB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn confab serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("server starts in time")
        .expect("read stdout")
        .expect("a line");
    let base_url = line
        .strip_prefix("confab listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    ServerProcess { child, base_url }
}

impl ServerProcess {
    /// Sends SIGTERM (a graceful shutdown); the caller waits for the exit.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("pid");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

/// Reads a raw connection until the server closes it; false if it stays
/// open for `within`.
pub async fn wait_closed(conn: &mut confab_sdk::RawConnection, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match conn.next_text().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}
