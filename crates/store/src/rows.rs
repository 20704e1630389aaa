//! Turning rows into protocol records, once for both backends: the
//! functions are generic over sqlx's `Row`, so SQLite and PostgreSQL rows
//! map through the same code.

use confab_proto::api::{Member, Role, User};
use confab_proto::{ConversationId, MessageKind, MessageRecord, Millis, Seq, UserId};
use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use crate::{Result, StoreError};

/// The `system` message a backend appended at `seq` (a group change's or
/// a message change's notice), with its reserved client id: '/' is not
/// allowed in client ids, so no client can take this key.
pub(crate) fn system_message(
    id: ConversationId,
    seq: Seq,
    by: UserId,
    body: Value,
    ts: Millis,
) -> MessageRecord {
    MessageRecord {
        conversation_id: id,
        seq,
        sender_id: by,
        client_msg_id: format!("system/{id}/{seq}"),
        kind: MessageKind::System,
        body,
        ts,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    }
}

/// Columns of `users` that make a [`User`], in this order.
pub(crate) const USER_COLUMNS: &str =
    "id, username, display_name, avatar_media_id, status_text, created_at";

/// [`USER_COLUMNS`] qualified with a table alias (`u.id, u.username, …`).
pub(crate) fn user_columns(alias: &str) -> String {
    qualify(USER_COLUMNS, alias)
}

/// [`MESSAGE_COLUMNS`] qualified with a table alias.
pub(crate) fn message_columns(alias: &str) -> String {
    qualify(MESSAGE_COLUMNS, alias)
}

/// A `", "`-separated column list with each column prefixed by `alias.`.
fn qualify(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns of `messages` that make a [`MessageRecord`], in this order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, sender_id, client_msg_id, kind, body, ts, edited_at, deleted_at, reactions";

/// Maps a row (columns by name) to a [`User`].
pub(crate) fn user<R>(row: &R) -> Result<User>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    i64: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        avatar_media_id: row.try_get("avatar_media_id")?,
        status_text: row.try_get("status_text")?,
        created_at: row.try_get("created_at")?,
        hide_presence: None,
    })
}

/// Maps a row (columns by name) to a [`MessageRecord`].
pub(crate) fn message<R>(row: &R) -> Result<MessageRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    i64: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    let kind: String = row.try_get("kind")?;
    let body: String = row.try_get("body")?;
    Ok(MessageRecord {
        conversation_id: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        sender_id: row.try_get("sender_id")?,
        client_msg_id: row.try_get("client_msg_id")?,
        kind: MessageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message kind {kind:?}")))?,
        body: serde_json::from_str(&body)?,
        ts: row.try_get("ts")?,
        read_by: None,
        edited_at: row.try_get("edited_at")?,
        deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
        reactions: match row.try_get::<Option<String>, _>("reactions")? {
            Some(r) => serde_json::from_str(&r)?,
            None => Default::default(),
        },
    })
}

/// Maps a row (columns by name) to a [`Member`].
pub(crate) fn member<R>(row: &R) -> Result<Member>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    i64: for<'a> Decode<'a, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    let role: String = row.try_get("role")?;
    Ok(Member {
        user_id: row.try_get("user_id")?,
        role: parse_role(&role)?,
        joined_seq: row.try_get("joined_seq")?,
        read_seq: row.try_get("read_seq")?,
    })
}

/// A role as stored.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

/// A stored role; an unknown name is a damaged row.
pub(crate) fn parse_role(s: &str) -> Result<Role> {
    Ok(match s {
        "owner" => Role::Owner,
        "admin" => Role::Admin,
        "member" => Role::Member,
        other => return Err(StoreError::Corrupt(format!("unknown role {other:?}"))),
    })
}
