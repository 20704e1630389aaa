//! Private NATS instances: `nats-server` with JetStream, on a free port of
//! 127.0.0.1, storing in a temporary directory, killed on drop.
//!
//! [`Nats::stop`] and [`Nats::start_again`] restart the same server (same
//! port, same JetStream store) so tests can check what clients do while NATS
//! is away and after it comes back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{free_port, TestkitError};

/// How long a server may take to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private `nats-server` with JetStream enabled.
pub struct Nats {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nats {
    /// Starts a server on a free port with its JetStream store in a new
    /// temporary directory, and waits until it answers.
    ///
    /// Fails with [`TestkitError::Missing`] when `nats-server` is not
    /// installed.
    pub async fn start() -> Result<Nats, TestkitError> {
        let binary = find_binary("nats-server")?;
        let dir = tempfile::Builder::new().prefix("confab-nats-").tempdir()?;
        let mut nats = Nats {
            binary,
            port: 0,
            monitor_port: 0,
            dir,
            child: None,
        };
        // A port found free may be taken by someone else before the server
        // binds it: try a few fresh ones.
        let mut last = None;
        for _ in 0..3 {
            nats.port = free_port()?;
            nats.monitor_port = free_port()?;
            if nats.port == nats.monitor_port {
                continue;
            }
            match nats.spawn(Instant::now() + START_TIMEOUT / 4).await {
                Ok(()) => return Ok(nats),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Failed("no free ports".into())))
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL: clients see the connection drop, as on a
    /// crash) and waits for the process to exit. No-op when stopped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the server again on the same port with the same JetStream
    /// store, and waits until it answers. No-op when it is running.
    ///
    /// Panics if it cannot start (the port was free a moment ago and is
    /// reserved for this test), so tests read simply.
    pub async fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        if let Err(e) = self.spawn(Instant::now() + START_TIMEOUT).await {
            panic!("nats-server did not start again: {e}");
        }
    }

    /// Starts the process, retrying until `deadline` (after a restart the
    /// old process may hold the port for a moment).
    async fn spawn(&mut self, deadline: Instant) -> Result<(), TestkitError> {
        loop {
            let mut child = Command::new(&self.binary)
                .arg("-a")
                .arg("127.0.0.1")
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-m")
                .arg(self.monitor_port.to_string())
                .arg("-js")
                .arg("-sd")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            match self.wait_ready(&mut child, deadline).await {
                Ok(()) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Waits until the client port accepts connections and `/healthz`
    /// (which covers JetStream) answers 200.
    async fn wait_ready(&self, child: &mut Child, deadline: Instant) -> Result<(), TestkitError> {
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(TestkitError::Failed(format!(
                    "nats-server exited at startup ({status})"
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
                && healthz(self.monitor_port).await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Failed(format!(
                    "nats-server on port {} did not become healthy",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop also does this; being explicit keeps the
            // temp dir from being removed under a live server.
            let _ = child.start_kill();
        }
    }
}

/// `GET /healthz` on the monitoring port; true on a 200 answer.
async fn healthz(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned();
        Some(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

/// Finds `name` on PATH or in the usual sbin/bin directories.
fn find_binary(name: &str) -> Result<PathBuf, TestkitError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| TestkitError::Missing(name.to_owned()))
}
