//! `confab register`, `login`, `logout`.

use anyhow::Context as _;
use clap::Args;
use confab_sdk::Client;

use super::{password, ClientArgs};
use crate::session_file;

/// `confab register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Username: 3-32 characters of a-z, 0-9, '_', '.', '-'.
    username: String,
    /// Password (else read from stdin).
    #[arg(long, env = "CONFAB_PASSWORD")]
    password: Option<String>,
    /// Name shown to others.
    #[arg(long)]
    display_name: Option<String>,
}

/// `confab login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Username.
    username: String,
    /// Password (else read from stdin).
    #[arg(long, env = "CONFAB_PASSWORD")]
    password: Option<String>,
    /// Name of this device.
    #[arg(long, default_value = "confab cli")]
    device_name: String,
}

/// `confab logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Creates an account.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let pw = password(args.password)?;
    let user = Client::new(&args.client.server)
        .register(&args.username, &pw, args.display_name.as_deref())
        .await?;
    println!("registered {} (user id {})", user.username, user.id);
    Ok(())
}

/// Logs in and saves the session.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let pw = password(args.password)?;
    let client = Client::new(&args.client.server);
    // Every login is a new device with a new key (its MLS signature key),
    // kept beside the session; it publishes KeyPackages at once so it can
    // be added to encrypted conversations.
    let dir = args.client.e2ee_dir()?;
    let e2ee = confab_sdk::E2ee::login(
        client.clone(),
        &dir,
        &args.username,
        &pw,
        Some(&args.device_name),
    )
    .await?;
    let session = e2ee.client().session().context("no session after login")?;
    let path = session_file::path(args.client.session.as_deref())?;
    session_file::save(&path, &session)?;
    println!(
        "logged in as {} (device {}); session saved to {}",
        session.user.username,
        session.device_id,
        path.display()
    );
    Ok(())
}

/// Revokes this device and removes the saved session.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let result = client.logout().await;
    session_file::remove(&session_file::path(args.client.session.as_deref())?)?;
    result?;
    println!("logged out");
    Ok(())
}
