//! `confab register`, `login`, `logout`.

use anyhow::Context as _;
use clap::Args;
use confab_sdk::{Client, DeviceKey, E2ee};

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
    /// Username (with --oidc: the one to take on a first sign-in, else asked).
    #[arg(required_unless_present = "oidc")]
    username: Option<String>,
    /// Sign in with this OpenID Connect provider (its id; `confab login
    /// --oidc ?` lists them): open the printed URL, sign in there, and
    /// paste the one-time code the last page shows.
    #[arg(long, value_name = "PROVIDER")]
    oidc: Option<String>,
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
    let client = Client::new(&args.client.server);
    // Every login is a new device with a new key (its MLS signature key),
    // kept beside the session; it publishes KeyPackages at once so it can
    // be added to encrypted conversations.
    let key = DeviceKey::generate()?;
    let public_key = key.public_b64();
    let session = match (&args.oidc, &args.username) {
        (Some(provider), _) => {
            oidc_login(
                &client,
                provider,
                args.username.as_deref(),
                &args.device_name,
                &public_key,
            )
            .await?
        }
        (None, Some(username)) => {
            let pw = password(args.password)?;
            client
                .login_with_key(username, &pw, Some(&args.device_name), Some(&public_key))
                .await?
        }
        (None, None) => anyhow::bail!("give a username, or --oidc PROVIDER"),
    };
    let path = session_file::path(args.client.session.as_deref())?;
    session_file::save(&path, &session)?;
    E2ee::start_device(client, &args.client.e2ee_dir()?, key)
        .await
        .context("logged in, but could not set up end-to-end encryption")?;
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

/// Reads one line of stdin after a prompt on stderr.
fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line)? == 0 {
        anyhow::bail!("no answer on stdin");
    }
    Ok(line.trim().to_owned())
}

/// `confab login --oidc PROVIDER`: the URL to open is printed on stdout;
/// the code the server's page shows afterwards is read from stdin.
async fn oidc_login(
    client: &Client,
    provider: &str,
    username: Option<&str>,
    device_name: &str,
    device_public_key: &str,
) -> anyhow::Result<confab_sdk::Session> {
    use confab_sdk::proto::api::OidcClient;
    use confab_sdk::OidcOutcome;

    let providers = client.oidc_providers().await?;
    if !providers.iter().any(|p| p.id == provider) {
        let known: Vec<String> = providers
            .iter()
            .map(|p| format!("{} ({})", p.id, p.name))
            .collect();
        anyhow::bail!(
            "the server has no sign-in provider {provider:?}; it has: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    let start = client.oidc_start(provider, OidcClient::Cli).await?;
    println!("open this URL in a browser and sign in:");
    println!("{}", start.authorization_url);
    let code = ask("then paste the one-time code shown: ")?;
    match client
        .oidc_exchange_with_key(
            &code,
            &start.flow,
            Some(device_name),
            Some(device_public_key),
        )
        .await?
    {
        OidcOutcome::SignedIn(session) => Ok(session),
        OidcOutcome::SignupRequired(offer) => {
            eprintln!("first sign-in as {}: pick a username", offer.display_name);
            let mut name = match username {
                Some(u) => u.to_owned(),
                None => ask(&format!(
                    "username [{}]: ",
                    offer.suggested_username.as_deref().unwrap_or("")
                ))?,
            };
            if name.is_empty() {
                name = offer.suggested_username.clone().unwrap_or_default();
            }
            let display = (!offer.display_name.is_empty()).then_some(offer.display_name.as_str());
            Ok(client
                .oidc_signup_with_key(
                    &offer.signup_token,
                    &name,
                    display,
                    Some(device_name),
                    Some(device_public_key),
                )
                .await?)
        }
        OidcOutcome::Linked(_) => {
            anyhow::bail!("the server linked an account instead of signing in")
        }
    }
}
