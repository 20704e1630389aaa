//! `confab group create [--encrypted]` and `confab e2ee …`: end-to-end
//! encrypted conversations from the command line (scriptable: `--json`).
//! The device key and MLS state stay in the session's folder
//! (`<session file>.e2ee/`) across invocations.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use confab_sdk::{Attachment, ConversationId, E2eeContent, E2eeMessage, MessageKind, UserId};
use serde_json::json;

use super::ClientArgs;

/// `confab group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with members (by username).
    Create(CreateGroupArgs),
}

/// `confab group create TITLE --members a,b [--encrypted]`.
#[derive(Debug, Args)]
pub struct CreateGroupArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Group title.
    title: String,
    /// Members besides me, comma-separated usernames.
    #[arg(long, value_delimiter = ',')]
    members: Vec<String>,
    /// End-to-end encrypted (MLS): every member device is added now.
    #[arg(long)]
    encrypted: bool,
    /// Print the conversation as JSON.
    #[arg(long)]
    json: bool,
}

/// `confab e2ee …`: encrypted conversations by id.
#[derive(Debug, Subcommand)]
pub enum E2eeCommand {
    /// Send a text message.
    Send(SendArgs),
    /// Encrypt and send a file (or an image with --image).
    SendFile(SendFileArgs),
    /// Print the decrypted history.
    History(HistoryArgs),
    /// Add users (all their devices, one commit).
    Add(MembersArgs),
    /// Remove a user (their devices first, then on the server).
    Remove(MembersArgs),
    /// Add members' new devices and drop revoked ones.
    Reconcile(ConvArgs),
    /// Fresh keys for this device's leaf.
    UpdateKeys(ConvArgs),
    /// Download and decrypt the attachment of message SEQ.
    Download(DownloadArgs),
    /// Print this device's safety number (or a user's devices').
    SafetyNumber(SafetyArgs),
    /// Top up this device's KeyPackages on the server.
    PublishKeys(ConvlessArgs),
}

/// Options without a conversation.
#[derive(Debug, Args)]
pub struct ConvlessArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// A conversation.
#[derive(Debug, Args)]
pub struct ConvArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
}

/// `send CONV TEXT`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
    /// Message text.
    text: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `send-file CONV PATH`.
#[derive(Debug, Args)]
pub struct SendFileArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
    /// The file.
    path: PathBuf,
    /// Send as an image.
    #[arg(long)]
    image: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `history CONV`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
    /// One JSON object per line: `{seq, sender_id, ts, content}`.
    #[arg(long)]
    json: bool,
}

/// `add|remove CONV USER…`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
    /// Usernames.
    #[arg(required = true)]
    users: Vec<String>,
}

/// `download CONV SEQ OUT`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Conversation id.
    conversation: ConversationId,
    /// The message's seq.
    seq: i64,
    /// Where to write the decrypted bytes.
    out: PathBuf,
}

/// `safety-number [USER]`.
#[derive(Debug, Args)]
pub struct SafetyArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A user whose devices' numbers to print (default: this device).
    user: Option<String>,
}

async fn user_ids(client: &confab_sdk::Client, names: &[String]) -> anyhow::Result<Vec<UserId>> {
    let mut ids = Vec::new();
    for name in names {
        let found = client.search_users(name).await?;
        let id = found
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(name))
            .map(|u| u.id)
            .with_context(|| format!("no user named {name:?}"))?;
        ids.push(id);
    }
    Ok(ids)
}

/// `confab group create`.
pub async fn group(cmd: GroupCommand) -> anyhow::Result<()> {
    let GroupCommand::Create(args) = cmd;
    let client = args.client.logged_in()?;
    let members = user_ids(&client, &args.members).await?;
    let conv = if args.encrypted {
        let e2ee = args.client.e2ee_over(&client).await?;
        e2ee.create_group(&args.title, &members).await?
    } else {
        client.create_group(&args.title, &members).await?
    };
    args.client.save_if_changed(&client)?;
    if args.json {
        println!("{}", serde_json::to_string(&conv)?);
    } else {
        let lock = if conv.encrypted {
            " 🔒 encrypted"
        } else {
            ""
        };
        println!("created group {} ({}){lock}", conv.id, args.title);
    }
    Ok(())
}

/// One history line for people.
pub fn line(m: &E2eeMessage) -> String {
    let what = match &m.content {
        E2eeContent::Message { kind, body } => match kind.as_str() {
            "text" => body["text"].as_str().unwrap_or("").to_owned(),
            other => format!(
                "[{other}: {} ({} bytes)]",
                body["name"].as_str().unwrap_or("?"),
                body["size"]
            ),
        },
        E2eeContent::Notice { body } => format!("* {}", body["event"].as_str().unwrap_or("notice")),
        E2eeContent::Commit { epoch } => format!("* keys changed (epoch {epoch})"),
        E2eeContent::Joined { epoch } => format!("* this device joined (epoch {epoch})"),
        E2eeContent::Removed => "* this device was removed".to_owned(),
        E2eeContent::Proposal => "* proposal".to_owned(),
        E2eeContent::BeforeJoin => "* (sent before this device joined)".to_owned(),
        E2eeContent::Failed { reason } => format!("* unable to decrypt: {reason}"),
    };
    format!("#{} user {}: {what}", m.seq, m.sender_id)
}

/// `confab e2ee …`.
pub async fn run(cmd: E2eeCommand) -> anyhow::Result<()> {
    match cmd {
        E2eeCommand::Send(a) => {
            let e2ee = a.client.e2ee().await?;
            let seq = e2ee.send_text(a.conversation, &a.text).await?;
            a.client.save_if_changed(e2ee.client())?;
            if a.json {
                println!("{}", json!({"conversation_id": a.conversation, "seq": seq}));
            } else {
                println!("sent (conversation {}, seq {seq})", a.conversation);
            }
        }
        E2eeCommand::SendFile(a) => {
            let e2ee = a.client.e2ee().await?;
            let kind = if a.image {
                MessageKind::Image
            } else {
                MessageKind::File
            };
            let attachment = Attachment::from_file(&a.path, kind)?;
            let seq = e2ee.send_attachment(a.conversation, attachment).await?;
            a.client.save_if_changed(e2ee.client())?;
            if a.json {
                println!("{}", json!({"conversation_id": a.conversation, "seq": seq}));
            } else {
                println!("sent (conversation {}, seq {seq})", a.conversation);
            }
        }
        E2eeCommand::History(a) => {
            let e2ee = a.client.e2ee().await?;
            for m in e2ee.history(a.conversation).await? {
                if a.json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    println!("{}", line(&m));
                }
            }
            a.client.save_if_changed(e2ee.client())?;
        }
        E2eeCommand::Add(a) => {
            let e2ee = a.client.e2ee().await?;
            let ids = user_ids(e2ee.client(), &a.users).await?;
            e2ee.add_members(a.conversation, &ids).await?;
            a.client.save_if_changed(e2ee.client())?;
            println!("added {}", a.users.join(", "));
        }
        E2eeCommand::Remove(a) => {
            let e2ee = a.client.e2ee().await?;
            for id in user_ids(e2ee.client(), &a.users).await? {
                e2ee.remove_member(a.conversation, id).await?;
            }
            a.client.save_if_changed(e2ee.client())?;
            println!("removed {}", a.users.join(", "));
        }
        E2eeCommand::Reconcile(a) => {
            let e2ee = a.client.e2ee().await?;
            e2ee.reconcile(a.conversation).await?;
            a.client.save_if_changed(e2ee.client())?;
            println!("devices up to date");
        }
        E2eeCommand::UpdateKeys(a) => {
            let e2ee = a.client.e2ee().await?;
            e2ee.update_keys(a.conversation).await?;
            a.client.save_if_changed(e2ee.client())?;
            println!("keys updated");
        }
        E2eeCommand::Download(a) => {
            let e2ee = a.client.e2ee().await?;
            let history = e2ee.history(a.conversation).await?;
            let Some(m) = history.iter().find(|m| m.seq == a.seq) else {
                bail!("no message {} in conversation {}", a.seq, a.conversation)
            };
            let E2eeContent::Message { body, .. } = &m.content else {
                bail!("message {} has no attachment", a.seq)
            };
            let bytes = e2ee.download_attachment(body).await?;
            std::fs::write(&a.out, &bytes)
                .with_context(|| format!("writing {}", a.out.display()))?;
            a.client.save_if_changed(e2ee.client())?;
            println!("saved {} bytes to {}", bytes.len(), a.out.display());
        }
        E2eeCommand::SafetyNumber(a) => {
            let e2ee = a.client.e2ee().await?;
            match &a.user {
                None => println!("{}", e2ee.safety_number()),
                Some(name) => {
                    let id = user_ids(e2ee.client(), std::slice::from_ref(name)).await?[0];
                    for d in e2ee.client().devices(id).await? {
                        let number = d
                            .public_key
                            .as_deref()
                            .and_then(confab_sdk::e2ee::safety_number_of_b64)
                            .unwrap_or_else(|| "(no key registered)".into());
                        println!("device {}: {number}", d.device_id);
                    }
                }
            }
            a.client.save_if_changed(e2ee.client())?;
        }
        E2eeCommand::PublishKeys(a) => {
            let e2ee = a.client.e2ee().await?;
            let stock = e2ee.publish_key_packages().await?;
            a.client.save_if_changed(e2ee.client())?;
            println!("{} key packages on the server", stock.stock);
        }
    }
    Ok(())
}
