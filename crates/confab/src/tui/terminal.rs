//! The real terminal: raw mode, alternate screen, mouse and paste on;
//! crossterm's async event stream feeding the runner (server or P2P); the bell; and
//! restoring the terminal on the way out, also after a panic.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use confab_p2p::node::NodeConfig;
use confab_sdk::{Client, E2ee};
use futures_util::StreamExt as _;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, EventStream,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;
use tokio::sync::mpsc;

use super::login;
use super::p2p_runner::{check_free, P2pRunError, P2pRunner};
use super::runner::{RunError, Runner, RunnerOptions};

/// Runs `confab chat` in this process's terminal until the user quits.
/// Without a session it first shows the login form. `e2ee_dir` holds the
/// device key and MLS state of the session's device: with a key there,
/// encrypted conversations are read and written.
pub async fn run(client: Client, e2ee_dir: Option<PathBuf>) -> Result<(), RunError> {
    install_panic_hook();
    enter().map_err(|e| RunError::Draw(e.to_string()))?;
    let result = run_entered(client, e2ee_dir).await;
    restore();
    result
}

async fn run_entered(client: Client, e2ee_dir: Option<PathBuf>) -> Result<(), RunError> {
    let (rx, reader) = read_terminal();
    let result = chat(client, rx, e2ee_dir).await;
    reader.abort();
    result
}

/// Runs `confab chat --p2p` in this process's terminal until the user
/// quits: the app on the peer of `config.data_dir`.
pub async fn run_p2p(config: NodeConfig) -> Result<(), P2pRunError> {
    check_free(&config.data_dir).await?;
    install_panic_hook();
    enter().map_err(|e| P2pRunError::Draw(e.to_string()))?;
    let (input, reader) = read_terminal();
    let backend = CrosstermBackend::new(std::io::stdout());
    let result = match P2pRunner::new(config, backend, input, options()).await {
        Ok(runner) => runner.run().await,
        Err(e) => Err(e),
    };
    reader.abort();
    restore();
    result
}

/// The terminal's events on a channel, read by a task (abort it when done).
fn read_terminal() -> (mpsc::Receiver<TermEvent>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let reader = tokio::spawn(async move {
        let mut events = EventStream::new();
        while let Some(Ok(event)) = events.next().await {
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

/// Runner options for a real terminal: the bell is `\x07`.
fn options() -> RunnerOptions {
    RunnerOptions {
        bell: Box::new(|| {
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x07");
            let _ = out.flush();
        }),
        ..RunnerOptions::default()
    }
}

async fn chat(
    client: Client,
    mut input: mpsc::Receiver<TermEvent>,
    e2ee_dir: Option<PathBuf>,
) -> Result<(), RunError> {
    if client.session().is_none() {
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
            .map_err(|e| RunError::Draw(e.to_string()))?;
        if !login::run_form(&mut terminal, &mut input, &client, e2ee_dir.as_deref()).await? {
            return Ok(());
        }
    }
    let e2ee = match e2ee_dir {
        Some(dir) if dir.join(confab_sdk::e2ee::KEY_FILE).exists() => {
            Some(Arc::new(E2ee::open(client.clone(), &dir).await?))
        }
        _ => None,
    };
    let options = RunnerOptions { e2ee, ..options() };
    let backend = CrosstermBackend::new(std::io::stdout());
    Runner::new(client, backend, input, options)
        .await?
        .run()
        .await
}

fn enter() -> std::io::Result<()> {
    enable_raw_mode()?;
    execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    )
}

/// Puts the terminal back as it was (best effort: used on every exit path).
pub fn restore() {
    let _ = execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

/// Restores the terminal before the panic message is printed, so it is
/// readable and the shell usable.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
