//! `confab send-image`, `send-file`, `download`: media from the command
//! line, streamed both ways with a progress line on stderr.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use confab_sdk::{Client, Progress};

use super::ClientArgs;

/// `confab send-image USER PATH`.
#[derive(Debug, Args)]
pub struct SendImageArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Recipient's username.
    user: String,
    /// JPEG, PNG, GIF or WebP file.
    path: PathBuf,
    /// Caption.
    #[arg(long)]
    caption: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `confab send-file USER PATH`: a resumable (tus) upload; run again after
/// an interruption (Ctrl-C, a dropped connection) to continue where it
/// stopped.
#[derive(Debug, Args)]
pub struct SendFileArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Recipient's username.
    user: String,
    /// Any file.
    path: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `confab download MEDIA_ID [PATH]`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The media id (from a message body). Ids made before the server
    /// stopped starting them with `-` are accepted too.
    #[arg(allow_hyphen_values = true)]
    media_id: String,
    /// Where to write it [default: ./MEDIA_ID]. An interrupted download
    /// leaves PATH.part and continues from there when run again.
    path: Option<PathBuf>,
}

/// A progress line on stderr (only when stderr is a terminal), at most
/// ten updates a second.
fn progress(label: &str, total: Option<u64>) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let label = label.to_owned();
    let start = Instant::now();
    let last = AtomicU64::new(0);
    Some(Arc::new(move |done: u64| {
        let ms = start.elapsed().as_millis() as u64;
        let prev = last.load(Ordering::Relaxed);
        let finished = total == Some(done);
        if ms < prev + 100 && !finished {
            return;
        }
        last.store(ms, Ordering::Relaxed);
        let rate = done as f64 / 1e6 / (ms.max(1) as f64 / 1000.0);
        let line = match total {
            Some(t) if t > 0 => format!(
                "\r{label}: {:>5.1}% {:.1}/{:.1} MB {rate:.1} MB/s",
                done as f64 * 100.0 / t as f64,
                done as f64 / 1e6,
                t as f64 / 1e6
            ),
            _ => format!("\r{label}: {:.1} MB {rate:.1} MB/s", done as f64 / 1e6),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{line}");
        if finished {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }))
}

async fn direct_with(client: &Client, username: &str) -> anyhow::Result<i64> {
    let found = client.search_users(username).await?;
    let user = found
        .iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
        .with_context(|| format!("no user named {username:?}"))?;
    Ok(client.direct_conversation(user.id).await?.id)
}

async fn upload(
    client: &Client,
    path: &Path,
) -> anyhow::Result<confab_sdk::proto::media::UploadedMedia> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let label = name.unwrap_or_else(|| "upload".into());
    Ok(client
        .upload_file(path, None, progress(&label, Some(size)))
        .await?)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// Uploads an image and sends it to a user.
pub async fn send_image(args: SendImageArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let conv = direct_with(&client, &args.user).await?;
    let media = upload(&client, &args.path).await?;
    if media.kind != "image" {
        anyhow::bail!(
            "{} is not an image the server accepts ({}); use send-file",
            args.path.display(),
            media.mime
        );
    }
    let sent = client
        .send_image(conv, &media, args.caption.as_deref())
        .await?;
    args.client.save_if_changed(&client)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"media": media, "conversation_id": conv, "seq": sent.seq})
        );
    } else {
        println!(
            "sent image {} ({}x{}, {} bytes) as seq {}",
            media.media_id,
            media.width.unwrap_or(0),
            media.height.unwrap_or(0),
            media.size,
            sent.seq
        );
    }
    Ok(())
}

/// Where unfinished uploads are remembered: `uploads.json` beside the
/// session file, mapping a file (path, size, mtime, server) to its tus
/// upload URL.
fn uploads_file(client_args: &ClientArgs) -> anyhow::Result<PathBuf> {
    let session = crate::session_file::path(client_args.session.as_deref())?;
    Ok(session.with_file_name("uploads.json"))
}

fn upload_key(server: &str, path: &Path) -> anyhow::Result<String> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
    let meta = std::fs::metadata(&abs)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{server} {} {} {mtime}", abs.display(), meta.len()))
}

fn load_uploads(file: &Path) -> serde_json::Map<String, serde_json::Value> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_uploads(file: &Path, map: &serde_json::Map<String, serde_json::Value>) {
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(bytes) = serde_json::to_vec_pretty(map) {
        let _ = std::fs::write(file, bytes);
    }
}

/// Uploads a file (resumably) and sends it to a user.
pub async fn send_file(args: SendFileArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let conv = direct_with(&client, &args.user).await?;
    let size = std::fs::metadata(&args.path)
        .with_context(|| format!("reading {}", args.path.display()))?
        .len();
    let media = if size == 0 {
        upload(&client, &args.path).await?
    } else {
        let state = uploads_file(&args.client)?;
        let key = upload_key(&args.client.server, &args.path)?;
        let resume = load_uploads(&state)
            .get(&key)
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        if resume.is_some() {
            eprintln!("resuming the upload of {}", args.path.display());
        }
        let remember = |url: &str| {
            let mut map = load_uploads(&state);
            map.insert(key.clone(), serde_json::Value::String(url.to_owned()));
            save_uploads(&state, &map);
        };
        let media = client
            .upload_resumable(
                &args.path,
                None,
                resume.as_deref(),
                &remember,
                progress(&file_name(&args.path), Some(size)),
            )
            .await?;
        let mut map = load_uploads(&state);
        map.remove(&key);
        save_uploads(&state, &map);
        media
    };
    let sent = client
        .send_file(conv, &media, &file_name(&args.path))
        .await?;
    args.client.save_if_changed(&client)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"media": media, "conversation_id": conv, "seq": sent.seq})
        );
    } else {
        println!(
            "sent file {} ({} bytes, sha256 {}) as seq {}",
            media.media_id, media.size, media.sha256, sent.seq
        );
    }
    Ok(())
}

/// Downloads a media item to a file.
pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let path = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.media_id));
    let n = client
        .download_media(&args.media_id, &path, progress(&args.media_id, None))
        .await?;
    args.client.save_if_changed(&client)?;
    println!("saved {n} bytes to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        download: super::DownloadArgs,
    }

    #[test]
    fn a_media_id_may_start_with_a_hyphen() {
        let cli =
            Cli::try_parse_from(["confab", "-oAbCdEfGhIjKlMnOpQrStU", "out.bin"]).expect("parses");
        assert_eq!(cli.download.media_id, "-oAbCdEfGhIjKlMnOpQrStU");
        assert_eq!(
            cli.download.path.as_deref(),
            Some(std::path::Path::new("out.bin"))
        );
    }
}
