//! The SDK calls behind [`Command`]s: each runs in its own task and turns
//! into [`AppEvent`]s (errors into a notice), and file sending (upload with
//! progress, then the media message).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use confab_sdk::{
    Ack, Client, ConnectionHandle, ConversationId, E2ee, HistoryQuery, MessageKind, MessagePage,
    MessageRecord, User,
};
use serde_json::{json, Value};

use super::app::HISTORY_PAGE;
use super::commands::{AppEvent, Command};

/// Finds a user by exact username.
async fn find_user(client: &Client, username: &str) -> Result<User, String> {
    let username = username.trim_start_matches('@');
    client
        .search_users(username)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
        .ok_or_else(|| format!("no user named {username}"))
}

/// Runs one HTTP command (through the device's MLS client `e2ee` where
/// the conversation is end-to-end encrypted); returns what to tell the app.
pub(crate) async fn http_command(
    client: &Client,
    e2ee: Option<&E2ee>,
    cmd: Command,
) -> Vec<AppEvent> {
    match http_command_inner(client, e2ee, cmd).await {
        Ok(events) => events,
        Err(e) => vec![AppEvent::Notice(e)],
    }
}

async fn http_command_inner(
    client: &Client,
    e2ee: Option<&E2ee>,
    cmd: Command,
) -> Result<Vec<AppEvent>, String> {
    let err = |e: confab_sdk::Error| e.to_string();
    let mls = || {
        e2ee.ok_or_else(|| {
            "🔒 this device has no encryption key: log in again with `confab login` to make one"
                .to_owned()
        })
    };
    Ok(match cmd {
        Command::LoadConversations => {
            vec![AppEvent::Conversations(
                client.conversations().await.map_err(err)?,
            )]
        }
        Command::LoadHistory {
            conversation_id,
            before,
        } => {
            let query = match before {
                Some(seq) => HistoryQuery::before(seq, HISTORY_PAGE),
                None => HistoryQuery {
                    limit: Some(HISTORY_PAGE),
                    ..HistoryQuery::default()
                },
            };
            match client.history(conversation_id, query).await {
                Ok(page) => vec![AppEvent::History {
                    conversation_id,
                    page,
                }],
                Err(e) => vec![
                    // An empty page that promises more: loading can be retried.
                    AppEvent::History {
                        conversation_id,
                        page: MessagePage {
                            messages: Vec::new(),
                            has_more: true,
                            has_more_before: None,
                        },
                    },
                    AppEvent::Notice(format!("loading history: {e}")),
                ],
            }
        }
        Command::RefreshMessage {
            conversation_id,
            seq,
        } => vec![AppEvent::Messages(
            client
                .history_around(conversation_id, seq, 1)
                .await
                .map_err(err)?
                .messages
                .into_iter()
                .filter(|m| m.seq == seq)
                .collect(),
        )],
        Command::LoadUser(id) => vec![AppEvent::User(client.user(id).await.map_err(err)?)],
        Command::LoadFriends => vec![AppEvent::Friends(client.friends().await.map_err(err)?)],
        Command::LoadFriendRequests => vec![AppEvent::FriendRequests(
            client
                .friend_requests(confab_sdk::Direction::Incoming)
                .await
                .map_err(err)?,
        )],
        Command::OpenDirect {
            username,
            encrypted,
            ticket,
        } => {
            let user = find_user(client, &username).await?;
            let conv = if encrypted {
                mls()?.create_direct(user.id).await.map_err(err)?
            } else {
                client.direct_conversation(user.id).await.map_err(err)?
            };
            vec![AppEvent::User(user), AppEvent::Opened(conv, ticket)]
        }
        Command::CreateGroup {
            title,
            usernames,
            encrypted,
            ticket,
        } => {
            let mut ids = Vec::new();
            for name in &usernames {
                ids.push(find_user(client, name).await?.id);
            }
            let conv = if encrypted {
                mls()?.create_group(&title, &ids).await.map_err(err)?
            } else {
                client.create_group(&title, &ids).await.map_err(err)?
            };
            vec![AppEvent::Opened(conv, ticket)]
        }
        Command::AddMember {
            conversation_id,
            username,
            encrypted,
        } => {
            let user = find_user(client, &username).await?;
            if encrypted {
                mls()?
                    .add_members(conversation_id, &[user.id])
                    .await
                    .map_err(err)?;
            } else {
                client
                    .add_members(conversation_id, &[user.id])
                    .await
                    .map_err(err)?;
            }
            vec![
                AppEvent::Notice(format!("added {username}")),
                AppEvent::Conversations(client.conversations().await.map_err(err)?),
            ]
        }
        Command::RemoveMember {
            conversation_id,
            username,
            encrypted,
        } => {
            let user = find_user(client, &username).await?;
            if encrypted {
                mls()?
                    .remove_member(conversation_id, user.id)
                    .await
                    .map_err(err)?;
            } else {
                client
                    .remove_member(conversation_id, user.id)
                    .await
                    .map_err(err)?;
            }
            vec![
                AppEvent::Notice(format!("removed {username}")),
                AppEvent::Conversations(client.conversations().await.map_err(err)?),
            ]
        }
        Command::Leave(id) => {
            client.leave(id).await.map_err(err)?;
            vec![AppEvent::Left(id)]
        }
        Command::SetMuted {
            conversation_id,
            muted,
        } => {
            let conv = client
                .set_muted(conversation_id, muted)
                .await
                .map_err(err)?;
            let what = if muted { "muted" } else { "unmuted" };
            vec![
                AppEvent::ConversationChanged(conv),
                AppEvent::Notice(what.to_owned()),
            ]
        }
        Command::SendFriendRequest { username } => {
            let user = find_user(client, &username).await?;
            let answer = client
                .send_friend_request(user.id, None)
                .await
                .map_err(err)?;
            let text = if answer.friend.is_some() {
                format!("you and {username} are friends now")
            } else {
                format!("friend request sent to {username}")
            };
            vec![
                AppEvent::Notice(text),
                AppEvent::Friends(client.friends().await.map_err(err)?),
            ]
        }
        Command::AcceptFriendRequest(id) | Command::DeclineFriendRequest(id) => {
            let accept = matches!(cmd, Command::AcceptFriendRequest(_));
            let text = if accept {
                let r = client.accept_friend_request(id).await.map_err(err)?;
                match r.friend {
                    Some(f) => format!("you and {} are friends now", f.user.username),
                    None => "friend request accepted".to_owned(),
                }
            } else {
                client.decline_friend_request(id).await.map_err(err)?;
                "friend request declined".to_owned()
            };
            vec![
                AppEvent::Notice(text),
                AppEvent::FriendRequests(
                    client
                        .friend_requests(confab_sdk::Direction::Incoming)
                        .await
                        .map_err(err)?,
                ),
                AppEvent::Friends(client.friends().await.map_err(err)?),
            ]
        }
        // Handled by the runner itself.
        Command::SendText { .. }
        | Command::Typing { .. }
        | Command::MarkRead { .. }
        | Command::SendFile { .. }
        | Command::SendEncrypted { .. }
        | Command::SendEncryptedFile { .. }
        | Command::Decrypt { .. }
        | Command::Bell
        | Command::Quit => Vec::new(),
    })
}

/// Uploads a file (resumable tus upload; a plain upload when empty) and
/// sends it as an `image`, `voice` or `file` message, by what the server
/// sniffed. Returns the message as stored.
pub(crate) async fn send_file(
    client: &Client,
    handle: &ConnectionHandle,
    me: confab_sdk::UserId,
    conversation_id: ConversationId,
    path: PathBuf,
    progress: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Result<MessageRecord, String> {
    let total = tokio::fs::metadata(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let last_percent = AtomicU64::new(u64::MAX);
    let report: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |sent: u64| {
        let percent = (sent.saturating_mul(100)).checked_div(total).unwrap_or(100);
        if last_percent.swap(percent, Ordering::Relaxed) != percent {
            progress(sent, total);
        }
    });
    report(0);
    let media = if total == 0 {
        client.upload_file(&path, None, Some(report)).await
    } else {
        client
            .upload_resumable(&path, None, None, &|_| {}, Some(report))
            .await
    }
    .map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let (kind, body) = match media.kind.as_str() {
        "image" => (
            MessageKind::Image,
            json!({
                "media_id": media.media_id,
                "width": media.width.unwrap_or(0),
                "height": media.height.unwrap_or(0),
            }),
        ),
        "voice" => (
            MessageKind::Voice,
            json!({ "media_id": media.media_id, "duration_ms": media.duration_ms.unwrap_or(0) }),
        ),
        _ => (
            MessageKind::File,
            json!({
                "media_id": media.media_id,
                "name": name,
                "size": media.size,
                "mime": media.mime,
            }),
        ),
    };
    let client_msg_id = confab_sdk::new_client_msg_id();
    let ack: Ack = handle
        .send_with_id(&client_msg_id, conversation_id, kind, body.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok(record(me, ack, kind, body))
}

fn record(me: confab_sdk::UserId, ack: Ack, kind: MessageKind, body: Value) -> MessageRecord {
    MessageRecord {
        conversation_id: ack.conversation_id,
        seq: ack.seq,
        sender_id: me,
        client_msg_id: ack.client_msg_id,
        kind,
        body,
        ts: ack.ts,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: BTreeMap::new(),
    }
}
