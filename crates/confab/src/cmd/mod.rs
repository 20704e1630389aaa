//! The subcommands.

pub mod account;
pub mod chat;
pub mod e2ee;
pub mod media;
pub mod p2p;
pub mod p2p_account;
pub mod search;
pub mod serve;

use std::path::PathBuf;

use clap::Args;
use confab_sdk::Client;

use crate::session_file;

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server base URL.
    #[arg(long, env = "CONFAB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Session file [default: <config dir>/confab/session.json].
    #[arg(long, env = "CONFAB_SESSION")]
    pub session: Option<PathBuf>,
}

impl ClientArgs {
    /// A client with the saved session.
    pub fn logged_in(&self) -> anyhow::Result<Client> {
        let path = session_file::path(self.session.as_deref())?;
        let session = session_file::load(&path)?;
        Ok(Client::with_session(&self.server, session))
    }

    /// The folder of this session's end-to-end encryption state (device
    /// key, MLS groups, decrypted history): `<session file>.e2ee/`, mode
    /// 0700.
    pub fn e2ee_dir(&self) -> anyhow::Result<PathBuf> {
        session_file::e2ee_dir(&session_file::path(self.session.as_deref())?)
    }

    /// The device's end-to-end encryption, opened from its session dir.
    pub async fn e2ee(&self) -> anyhow::Result<confab_sdk::E2ee> {
        self.e2ee_over(&self.logged_in()?).await
    }

    /// [`ClientArgs::e2ee`] over a client the command already made: one
    /// session, so a token refresh by either is seen by both (two clients
    /// refreshing the same token would spend it twice, which revokes the
    /// device).
    pub async fn e2ee_over(&self, client: &Client) -> anyhow::Result<confab_sdk::E2ee> {
        Ok(confab_sdk::E2ee::open(client.clone(), &self.e2ee_dir()?).await?)
    }

    /// Saves the client's session again if it was refreshed meanwhile.
    pub fn save_if_changed(&self, client: &Client) -> anyhow::Result<()> {
        let path = session_file::path(self.session.as_deref())?;
        if let (Some(now), Ok(before)) = (client.session(), session_file::load(&path)) {
            if now.refresh_token != before.refresh_token {
                session_file::save(&path, &now)?;
            }
        }
        Ok(())
    }
}

/// Reads a password from `--password`/env or, failing that, one line of stdin.
pub fn password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    eprint!("password: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
