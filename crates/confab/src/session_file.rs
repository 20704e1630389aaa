//! The saved CLI session: a JSON file in the user's config directory,
//! readable by its owner only (mode 0600).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use confab_sdk::Session;

/// Where the session lives: `--session`, else `$CONFAB_SESSION`, else
/// `<config dir>/confab/session.json`.
pub fn path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let base = dirs::config_dir().context("no config directory for this user; pass --session")?;
    Ok(base.join("confab").join("session.json"))
}

/// The folder beside the session file that holds the device key and MLS
/// state of its device (`<session file>.e2ee/`, mode 0700), created if
/// missing.
pub fn e2ee_dir(session: &Path) -> anyhow::Result<PathBuf> {
    let mut name = session.file_name().unwrap_or_default().to_os_string();
    name.push(".e2ee");
    let dir = session.with_file_name(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// Saves the session, creating the folder, with mode 0600.
pub fn save(path: &Path, session: &Session) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(session)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads the saved session.
pub fn load(path: &Path) -> anyhow::Result<Session> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "no saved session at {}: run `confab login` first",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("unreadable session file {}", path.display()))
}

/// Removes the saved session, if any.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
