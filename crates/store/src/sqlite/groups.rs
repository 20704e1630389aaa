//! The `system` notice of a group's creation (`create_group` runs on the
//! sqlx writer). Group changes run on the writer thread
//! (`batch_changes.rs`).

use confab_proto::{ConversationId, MessageKind, MessageRecord, Millis, Seq, UserId};
use serde_json::Value;
use sqlx::SqliteConnection;

use crate::Result;

/// Appends one `system` message and returns it.
pub(crate) async fn notice(
    tx: &mut SqliteConnection,
    id: ConversationId,
    by: UserId,
    body: Value,
    ts: Millis,
) -> Result<MessageRecord> {
    let seq: Seq = sqlx::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    // '/' is not allowed in client ids, so no client can take this key.
    let client_msg_id = format!("system/{id}/{seq}");
    sqlx::query(
        "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
         VALUES (?, ?, ?, ?, 'system', ?, ?)",
    )
    .bind(id)
    .bind(seq)
    .bind(by)
    .bind(&client_msg_id)
    .bind(body.to_string())
    .bind(ts)
    .execute(&mut *tx)
    .await?;
    Ok(MessageRecord {
        conversation_id: id,
        seq,
        sender_id: by,
        client_msg_id,
        kind: MessageKind::System,
        body,
        ts,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    })
}
