//! Turning rows into protocol records, once for both backends: the
//! functions are generic over [`NamedRow`], which PostgreSQL's rows (sqlx)
//! and SQLite's (rusqlite) both implement.

use confab_proto::api::{Member, Role, User};
use confab_proto::{ConversationId, MessageKind, MessageRecord, Millis, Seq, UserId};
use serde_json::Value;
use sqlx::Postgres;

use crate::{Result, StoreError};

/// A value a column is read as on either backend.
pub(crate) trait Column:
    rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>
{
}

impl<T> Column for T where
    T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>
{
}

/// A result row whose columns are read by name.
pub(crate) trait NamedRow {
    /// The value of the column called `name`.
    fn column<T: Column>(&self, name: &'static str) -> Result<T>;
}

impl NamedRow for sqlx::postgres::PgRow {
    fn column<T: Column>(&self, name: &'static str) -> Result<T> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

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
pub(crate) fn user<R: NamedRow>(row: &R) -> Result<User> {
    Ok(User {
        id: row.column("id")?,
        username: row.column("username")?,
        display_name: row.column("display_name")?,
        avatar_media_id: row.column("avatar_media_id")?,
        status_text: row.column("status_text")?,
        created_at: row.column("created_at")?,
        hide_presence: None,
    })
}

/// Maps a row (columns by name) to a [`MessageRecord`].
pub(crate) fn message<R: NamedRow>(row: &R) -> Result<MessageRecord> {
    let kind: String = row.column("kind")?;
    let body: String = row.column("body")?;
    Ok(MessageRecord {
        conversation_id: row.column("conversation_id")?,
        seq: row.column("seq")?,
        sender_id: row.column("sender_id")?,
        client_msg_id: row.column("client_msg_id")?,
        kind: MessageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message kind {kind:?}")))?,
        body: serde_json::from_str(&body)?,
        ts: row.column("ts")?,
        read_by: None,
        edited_at: row.column("edited_at")?,
        deleted: row.column::<Option<i64>>("deleted_at")?.is_some(),
        reactions: match row.column::<Option<String>>("reactions")? {
            Some(r) => serde_json::from_str(&r)?,
            None => Default::default(),
        },
    })
}

/// Maps a row (columns by name) to a [`Member`].
pub(crate) fn member<R: NamedRow>(row: &R) -> Result<Member> {
    let role: String = row.column("role")?;
    Ok(Member {
        user_id: row.column("user_id")?,
        role: parse_role(&role)?,
        joined_seq: row.column("joined_seq")?,
        read_seq: row.column("read_seq")?,
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
