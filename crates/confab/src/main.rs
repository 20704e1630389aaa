//! `confab`: one binary for the server, the command-line client and the
//! benchmarks.

mod bench;
mod cmd;
mod session_file;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the server allocates and frees many
/// small buffers per message across threads. Measured with `confab bench
/// pairs` (200 connections, window 10, 3 runs each): 34.5 vs 37.9 µs of
/// server CPU per message, 24.7k vs 23.4k msgs/s; idle memory per
/// connection unchanged (3.6 KB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Confab: a distributed instant-messaging system.
#[derive(Debug, Parser)]
#[command(name = "confab", version, about)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info,confab_server=debug`.
    #[arg(long, env = "CONFAB_LOG", default_value = "info", global = true)]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CONFAB_LOG_JSON", global = true)]
    log_json: bool,
    /// Trust the CA certificate(s) in this PEM file for https:// and wss://
    /// servers (a private CA), besides the usual public ones.
    #[arg(long, env = "CONFAB_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (SQLite + local blobs under --data-dir by default).
    Serve(Box<cmd::serve::ServeArgs>),
    /// Create an account.
    Register(cmd::account::RegisterArgs),
    /// Log in and save the session (file mode 0600).
    Login(cmd::account::LoginArgs),
    /// Log out this device and forget the saved session.
    Logout(cmd::account::LogoutArgs),
    /// Send a text message to a user (direct conversation).
    Send(cmd::chat::SendArgs),
    /// Print the history of the direct conversation with a user.
    History(cmd::chat::HistoryArgs),
    /// Print live events, one line each, until interrupted.
    Listen(cmd::chat::ListenArgs),
    /// Search the messages I can read.
    Search(cmd::search::SearchArgs),
    /// Upload an image and send it to a user.
    SendImage(cmd::media::SendImageArgs),
    /// Upload a file and send it to a user.
    SendFile(cmd::media::SendFileArgs),
    /// Download a media item (image, voice note, file).
    Download(cmd::media::DownloadArgs),
    /// Groups: `group create TITLE --members a,b [--encrypted]`.
    #[command(subcommand)]
    Group(cmd::e2ee::GroupCommand),
    /// End-to-end encrypted conversations: send, history, members, keys.
    #[command(subcommand)]
    E2ee(cmd::e2ee::E2eeCommand),
    /// Full-screen terminal chat app (`--p2p`: on the peer-to-peer backend).
    Chat(ChatArgs),
    /// Peer-to-peer mode: chat with other devices directly, no server.
    #[command(subcommand)]
    P2p(cmd::p2p::P2pCommand),
    /// Load benchmarks against a real server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// How long blocking work (file hashing, image decoding) may still run
/// once the command is done before the process leaves anyway: a parser
/// stuck on crafted input must never keep a stopped server alive.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    runtime.shutdown_timeout(BLOCKING_GRACE);
    code
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(ca) = &cli.ca_cert {
        // Checked now, for a clear error; every client the SDK makes in this
        // process then trusts it (it reads CONFAB_CA_CERT).
        if let Err(e) = confab_sdk::Client::new("https://localhost").with_ca_cert(ca) {
            eprintln!("error: --ca-cert: {e}");
            return std::process::ExitCode::FAILURE;
        }
        std::env::set_var(confab_sdk::CA_CERT_ENV, ca);
    }
    // Log lines on stderr would draw over the full-screen chat app.
    if !matches!(cli.command, Command::Chat(_)) {
        init_tracing(&cli.log, cli.log_json);
    }
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::serve(*args).await,
        Command::Register(args) => cmd::account::register(args).await,
        Command::Login(args) => cmd::account::login(args).await,
        Command::Logout(args) => cmd::account::logout(args).await,
        Command::Send(args) => cmd::chat::send(args).await,
        Command::History(args) => cmd::chat::history(args).await,
        Command::Group(c) => cmd::e2ee::group(c).await,
        Command::E2ee(c) => cmd::e2ee::run(c).await,
        Command::Listen(args) => cmd::chat::listen(args).await,
        Command::Search(args) => cmd::search::search(args).await,
        Command::SendImage(args) => cmd::media::send_image(args).await,
        Command::SendFile(args) => cmd::media::send_file(args).await,
        Command::Download(args) => cmd::media::download(args).await,
        Command::Chat(args) => chat(args).await,
        Command::P2p(args) => cmd::p2p::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The server `confab chat` logs in to when there is no saved session and
/// no `--server` (the other commands' default too).
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Options of `confab chat`.
#[derive(Debug, clap::Args)]
struct ChatArgs {
    /// Server base URL [default: the saved session's, else
    /// http://127.0.0.1:8080].
    #[arg(long)]
    server: Option<String>,
    /// Session file [default: <config dir>/confab/session.json].
    #[arg(long, env = "CONFAB_SESSION")]
    session: Option<std::path::PathBuf>,
    /// Chat peer to peer with your contacts (`confab p2p add`), no server.
    #[arg(long, conflicts_with = "server")]
    p2p: bool,
    #[command(flatten)]
    peer: cmd::p2p::P2pChatArgs,
}

/// `confab chat`: the saved session, the TUI, and the session saved again
/// whenever the SDK refreshes its tokens.
async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    if args.p2p {
        return cmd::p2p::chat(args.peer).await;
    }
    let path = session_file::path(args.session.as_deref())?;
    let e2ee_dir = session_file::e2ee_dir(&path)?;
    // Without a saved session the app starts with its login form; the
    // session it makes is saved below like a refreshed one.
    let client = if path.exists() {
        let session = session_file::load(&path)?;
        match &args.server {
            Some(server) => confab_sdk::Client::with_session(server, session),
            None => confab_sdk::Client::from_session(session),
        }
    } else {
        confab_sdk::Client::new(args.server.as_deref().unwrap_or(DEFAULT_SERVER))
    };
    let mut sessions = client.watch_session();
    let saver = tokio::spawn(async move {
        while sessions.changed().await.is_ok() {
            let current = sessions.borrow_and_update().clone();
            if let Some(s) = current {
                let _ = session_file::save(&path, &s);
            }
        }
    });
    let result = confab::tui::terminal::run(client, Some(e2ee_dir)).await;
    saver.abort();
    Ok(result?)
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Clap's own checks of the definition (unique names and groups,
    /// `requires` naming real arguments), which otherwise run only when
    /// a command is parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
