//! Private PostgreSQL servers for tests.
//!
//! [`Postgres::start`] makes a fresh cluster in a temporary directory with
//! `initdb`, starts `postgres` on a free port of 127.0.0.1 (and a Unix socket
//! in the same temporary directory), waits until it answers and creates the
//! database `confab`. Nothing is shared with any server that may already run
//! on the machine, and nothing is left behind: dropping the value shuts the
//! server down and deletes the directory.
//!
//! The binaries come from `$CONFAB_PG_BINDIR` when set, else from
//! `pg_config --bindir`, else from the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root; when the tests run as root, `initdb`,
//! `postgres` and `pg_ctl` run as the `postgres` user through
//! `runuser -u postgres --`, and the temporary directory is handed to that
//! user.
//!
//! The server keeps `fsync=on` (only `initdb` skips syncing), so a commit
//! that returned is on disk: tests that stop and restart the server
//! ([`Postgres::stop`], [`Postgres::start_again`]) or kill it may rely on
//! durability.
//!
//! [`Postgres::start_or_skip`] is for suites with a half that needs no
//! PostgreSQL: where none is installed it says so on stderr and returns
//! `None`, unless `CONFAB_REQUIRE_POSTGRES` is set (`scripts/test` sets it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), confab_testkit::TestkitError> {
//! let mut pg = confab_testkit::postgres::Postgres::start().await?;
//! let url = pg.url(); // postgres://postgres@127.0.0.1:PORT/confab
//! # let _ = url;
//! pg.stop().await; // an outage
//! pg.start_again().await?; // same data, same port
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, TestkitError};

/// How long a server may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Postgres::stop`] waits for the server to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The OS user that runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

/// Attempts at finding a port nobody else took between choosing and binding.
const PORT_ATTEMPTS: usize = 3;

/// A private PostgreSQL server: its own cluster in a temporary directory,
/// listening on 127.0.0.1 on a port of its own, with a database `confab`
/// owned by the superuser `postgres` (no password: `trust`).
///
/// Dropping it shuts the server down (immediate mode) and deletes its data.
#[derive(Debug)]
pub struct Postgres {
    /// Holds `data/` (the cluster), `sock/` (the Unix socket) and
    /// `postgres.log`; deleted on drop.
    dir: tempfile::TempDir,
    /// Where `initdb`, `postgres` and `pg_ctl` are.
    bindir: PathBuf,
    /// The TCP port on 127.0.0.1.
    port: u16,
    /// Run the server binaries as this user (`runuser -u USER --`): set when
    /// the tests run as root.
    run_as: Option<&'static str>,
    /// The running server (`postgres`, or `runuser` in front of it).
    child: Option<Child>,
    /// With TLS: the server's certificate and key files (in `dir`).
    tls: Option<(PathBuf, PathBuf)>,
}

impl Postgres {
    /// Like [`Postgres::start`], but `None` where PostgreSQL is not
    /// installed, after a line on stderr (once per process) that says the
    /// PostgreSQL half of the tests was skipped. With
    /// `CONFAB_REQUIRE_POSTGRES` set, a missing PostgreSQL panics instead;
    /// any other failure to start always panics.
    pub async fn start_or_skip() -> Option<Postgres> {
        match Postgres::start().await {
            Ok(pg) => Some(pg),
            Err(TestkitError::Missing(what))
                if std::env::var_os("CONFAB_REQUIRE_POSTGRES").is_none() =>
            {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    // Straight to stderr: the test harness hides the
                    // println! of passing tests.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "confab-testkit: PostgreSQL tests SKIPPED: {what} not found \
                         (scripts/test installs it; CONFAB_REQUIRE_POSTGRES=1 makes this an error)"
                    );
                });
                None
            }
            Err(e) => panic!("start postgres: {e}"),
        }
    }

    /// Makes a new cluster and starts a server on it; returns once the
    /// database `confab` exists and accepts connections.
    ///
    /// [`TestkitError::Missing`] when no PostgreSQL binaries are installed;
    /// [`TestkitError::Failed`] (with the end of the server log) when the
    /// server does not come up within 30 s.
    pub async fn start() -> Result<Postgres, TestkitError> {
        Postgres::start_inner(None).await
    }

    /// Like [`Postgres::start`], with TLS on (`ssl = on`) using this PEM
    /// certificate and key; plain connections are still accepted.
    pub async fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Postgres, TestkitError> {
        Postgres::start_inner(Some((cert_pem, key_pem))).await
    }

    async fn start_inner(tls: Option<(&str, &str)>) -> Result<Postgres, TestkitError> {
        let bindir = find_bindir()?;
        let run_as = is_root().then_some(SERVER_USER);
        let dir = temp_dir(run_as.is_some())?;
        let mut pg = Postgres {
            dir,
            bindir,
            port: 0,
            run_as,
            child: None,
            tls: None,
        };
        std::fs::create_dir(pg.sock_dir())?;
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            let (cert_path, key_path) = (
                pg.dir.path().join("server.crt"),
                pg.dir.path().join("server.key"),
            );
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
            pg.tls = Some((cert_path, key_path));
        }
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user).await?;
            std::os::unix::fs::chown(pg.dir.path(), Some(uid), Some(gid))?;
            std::os::unix::fs::chown(pg.sock_dir(), Some(uid), Some(gid))?;
            if let Some((cert, key)) = &pg.tls {
                std::os::unix::fs::chown(cert, Some(uid), Some(gid))?;
                std::os::unix::fs::chown(key, Some(uid), Some(gid))?;
            }
        }
        pg.initdb().await?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port()?;
            match pg.launch().await {
                Ok(()) => {
                    pg.create_database("confab").await?;
                    return Ok(pg);
                }
                Err(e) => {
                    // Most likely somebody took the port first: try another.
                    pg.kill().await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Failed("postgres did not start".into())))
    }

    /// `postgres://postgres@127.0.0.1:PORT/confab`.
    pub fn url(&self) -> String {
        self.url_for("confab")
    }

    /// The URL of another database of this server (see
    /// [`Postgres::create_database`]).
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the server is running (as far as this value knows: it was
    /// started and not stopped, and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the server logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Creates another (empty) database and returns its URL: a cheap way
    /// to give several tests one server each a database of its own.
    pub async fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        let mut cmd = Command::new(self.bindir.join("createdb"));
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name);
        run(cmd, self.dir.path(), "createdb").await?;
        Ok(self.url_for(name))
    }

    /// Shuts the server down (`pg_ctl stop -m fast`: clients are
    /// disconnected, the server checkpoints and exits) and waits for it to
    /// exit. The data stays; [`Postgres::start_again`] brings it back. Does
    /// nothing when the server is not running.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let mut cmd = self.server_command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "30", "stop"]);
            // A failure here (e.g. it just died by itself) is dealt with below.
            let _ = run(cmd, self.dir.path(), "pg_ctl stop").await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same data directory and port (after
    /// [`Postgres::stop`], or after it died); returns once it accepts
    /// connections. Does nothing when it is running.
    pub async fn start_again(&mut self) -> Result<(), TestkitError> {
        if self.is_running() {
            return Ok(());
        }
        self.kill().await;
        let deadline = Instant::now() + READY_TIMEOUT;
        // Right after a stop the port may still be held for a moment.
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    self.kill().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn sock_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for a server binary (`initdb`, `postgres`, `pg_ctl`), run as
    /// the server user when the tests run as root.
    fn server_command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        // The server user may not be allowed into the current directory.
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    async fn initdb(&self) -> Result<(), TestkitError> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(cmd, self.dir.path(), "initdb").await
    }

    /// Starts the server on `self.port` and waits until it is ready.
    async fn launch(&mut self) -> Result<(), TestkitError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.sock_dir())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"]);
        if let Some((cert, key)) = &self.tls {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        cmd.stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        self.child = Some(cmd.spawn()?);
        self.wait_ready().await
    }

    /// Waits until this server (not some other one that took the port) says
    /// it is ready, the port accepts connections and `pg_isready` agrees.
    async fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(self.failure(&format!("postgres exited ({status})")));
                }
            }
            if self.pid_file_says_ready()
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                && self.pg_isready().await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure("postgres did not become ready within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `postmaster.pid` names our port and says `ready` (PostgreSQL writes
    /// that once it listens).
    fn pid_file_says_ready(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.get(3) == Some(&self.port.to_string().as_str()) && lines.get(7) == Some(&"ready")
    }

    async fn pg_isready(&self) -> bool {
        let mut cmd = Command::new(self.bindir.join("pg_isready"));
        cmd.args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-t", "2", "-p"])
            .arg(self.port.to_string())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        matches!(cmd.status().await, Ok(s) if s.success())
    }

    /// An error with the end of the server log.
    fn failure(&self, what: &str) -> TestkitError {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        TestkitError::Failed(format!(
            "{what} (port {}); log:\n{}",
            self.port,
            tail.join("\n")
        ))
    }

    /// Kills whatever server process this value started, without a clean
    /// shutdown, and waits for it.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // `runuser` stands in front of the server when we are root:
                // killing it would orphan the server, so ask the server.
                self.immediate_shutdown();
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// `pg_ctl stop -m immediate`, synchronously (usable in `Drop`).
    fn immediate_shutdown(&self) {
        let binary = self.bindir.join("pg_ctl");
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = std::process::Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(binary);
                cmd
            }
            None => std::process::Command::new(binary),
        };
        let _ = cmd
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.immediate_shutdown();
            }
            // kill_on_drop ends whatever is left of the child.
            drop(child);
        }
    }
}

/// Runs a command to completion; an error carries its output.
async fn run(mut cmd: Command, cwd: &Path, what: &str) -> Result<(), TestkitError> {
    let out = cmd
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| TestkitError::Failed(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestkitError::Failed(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// Where the PostgreSQL server binaries are.
fn find_bindir() -> Result<PathBuf, TestkitError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("CONFAB_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin; the newest wins.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| TestkitError::Missing("PostgreSQL (initdb, postgres)".into()))
}

/// Whether this process runs with effective uid 0.
fn is_root() -> bool {
    // /proc/self/status: "Uid:\treal\teffective\tsaved\tfs".
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            if let Some(euid) = line.split_whitespace().nth(2) {
                return euid == "0";
            }
        }
    }
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of an OS user.
async fn user_ids(user: &str) -> Result<(u32, u32), TestkitError> {
    let id = |flag: &'static str| {
        let user = user.to_string();
        async move {
            let out = Command::new("id").arg(flag).arg(&user).output().await?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .map_err(|_| {
                    TestkitError::Failed(format!(
                        "running as root needs a `{user}` user to run PostgreSQL as"
                    ))
                })
        }
    };
    Ok((id("-u").await?, id("-g").await?))
}

/// A temporary directory for the cluster. When the server runs as another
/// user, every directory above it must let that user through; `$TMPDIR`
/// may not (e.g. under `/root`), `/tmp` does.
fn temp_dir(other_user: bool) -> Result<tempfile::TempDir, TestkitError> {
    let mut base = std::env::temp_dir();
    if other_user && !traversable(&base) {
        base = PathBuf::from("/tmp");
    }
    Ok(tempfile::Builder::new()
        .prefix("confab-pg-")
        .tempdir_in(base)?)
}

/// Whether others may pass through `dir` and every directory above it.
fn traversable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn psql(pg: &Postgres, sql: &str) -> String {
        let out = Command::new(pg.bindir.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(pg.url())
            .output()
            .await
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn starts_stops_and_keeps_data() {
        let mut pg = Postgres::start().await.expect("start");
        assert!(pg.url().ends_with(&format!(":{}/confab", pg.port())));
        psql(&pg, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)").await;
        let port = pg.port();
        pg.stop().await;
        assert!(!pg.is_running());
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
        pg.start_again().await.expect("start again");
        assert_eq!(pg.port(), port);
        assert_eq!(psql(&pg, "SELECT x FROM t").await, "42");
        let other = pg.create_database("other").await.expect("createdb");
        assert!(other.ends_with("/other"));
        let dir = pg.dir.path().to_path_buf();
        drop(pg);
        assert!(!dir.exists(), "data deleted");
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
    }
}
