//! The `system` notice that a group change or a group's creation appends,
//! for both backends: compiled once as `sqlite::notice` (used by
//! `create_group`; SQLite's other group changes run on the writer thread,
//! `batch_changes.rs`) and once as `postgres::notice` (used by
//! `create_group` and the committer's group changes, `groups.rs`).

use confab_proto::{ConversationId, MessageRecord, Millis, Seq, UserId};
use serde_json::Value;

use super::dialect::{self, Conn};
use crate::rows;
use crate::Result;

/// Appends one `system` message and returns it.
pub(crate) async fn notice(
    tx: &mut Conn,
    id: ConversationId,
    by: UserId,
    body: Value,
    ts: Millis,
) -> Result<MessageRecord> {
    let seq: Seq = dialect::query_scalar(
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let record = rows::system_message(id, seq, by, body, ts);
    dialect::query(
        "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
         VALUES ($1, $2, $3, $4, 'system', $5, $6)",
    )
    .bind(id)
    .bind(seq)
    .bind(by)
    .bind(&record.client_msg_id)
    .bind(record.body.to_string())
    .bind(ts)
    .execute(&mut *tx)
    .await?;
    Ok(record)
}
