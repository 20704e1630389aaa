//! The `confab` binary as a command-line client of a test server.

use std::path::Path;

use super::PASSWORD;

/// `confab` aimed at `server`, keeping its session in the file `session`.
pub fn cli(server: &str, session: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"));
    cmd.env("CONFAB_SERVER", server)
        .env("CONFAB_SESSION", session)
        .env("CONFAB_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// Runs a command to the end, asserts that it succeeded, returns its stdout.
pub async fn cli_ok(mut cmd: tokio::process::Command) -> String {
    let out = cmd.output().await.expect("run confab");
    assert!(
        out.status.success(),
        "confab failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `confab register NAME` then `confab login NAME` with the test password;
/// what each printed.
pub async fn cli_register_and_login(server: &str, session: &Path, name: &str) -> (String, String) {
    let mut register = cli(server, session);
    register.args(["register", name, "--password", PASSWORD]);
    let registered = cli_ok(register).await;
    let mut login = cli(server, session);
    login.args(["login", name, "--password", PASSWORD]);
    (registered, cli_ok(login).await)
}
