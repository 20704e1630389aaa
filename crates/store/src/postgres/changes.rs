//! Edits, deletions for everyone and reactions, made inside the
//! committer's transaction so they take their place in the conversation's
//! seq order: each updates the target row and appends a `system` notice.
//!
//! The committer has locked the conversation row before any of this runs,
//! so nothing else changes the conversation until the transaction ends.
//! The rules are shared with SQLite (`change_plan.rs`).

use confab_proto::error::ErrorCode;
use confab_proto::Millis;
use sqlx::PgConnection;

use super::notice::notice;
use super::rows::{self, MESSAGE_COLUMNS};
use crate::change_plan::{self as rules, Write};
use crate::types::*;
use crate::Result;

/// Applies one change. `Ok(Err(code))` is a refusal with nothing written.
pub(crate) async fn apply(
    tx: &mut PgConnection,
    change: &MessageChange,
    ts: Millis,
) -> Result<std::result::Result<MessageChangeOutcome, ErrorCode>> {
    let id = change.conversation_id();
    let by = change.actor();
    let seq = rules::target_seq(change);
    let roster: rules::Roster = sqlx::query_as(
        "SELECT user_id, role, joined_seq FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let Some((role, joined)) = rules::actor(&roster, by) else {
        let former: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM former_members WHERE conversation_id = $1 AND user_id = $2)",
        )
        .bind(id)
        .bind(by)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(Err(rules::outsider(former)));
    };
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2"
    ))
    .bind(id)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Err(ErrorCode::NotFound));
    };
    let mut target = rows::message(&row)?;
    if let Some(code) = rules::refuse_target(&target, joined) {
        return Ok(Err(code));
    }
    let (members, viewers) = rules::audience(&roster, seq);
    let kind: String = sqlx::query_scalar("SELECT kind FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let plan = match rules::plan(change, &target, &kind, &role, ts) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            return Ok(Ok(MessageChangeOutcome {
                notice: None,
                target,
                members,
                viewers,
            }))
        }
        Err(code) => return Ok(Err(code)),
    };
    match &plan.write {
        Write::Body(body) => {
            sqlx::query(
                "UPDATE messages SET body = $1, edited_at = $2 WHERE conversation_id = $3 AND seq = $4",
            )
            .bind(body.to_string())
            .bind(ts)
            .bind(id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        Write::Tombstone => {
            sqlx::query(
                "UPDATE messages SET body = '{}', deleted_at = $1, reactions = NULL
                 WHERE conversation_id = $2 AND seq = $3",
            )
            .bind(ts)
            .bind(id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM mentions WHERE conversation_id = $1 AND seq = $2")
                .bind(id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            // Its media is no longer reachable through it.
            if let Some(media_id) = target.body.get("media_id").and_then(|v| v.as_str()) {
                sqlx::query(
                    "DELETE FROM message_media
                     WHERE media_id = $1 AND conversation_id = $2 AND seq = $3",
                )
                .bind(media_id)
                .bind(id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
        }
        Write::Reactions(map) => {
            let text = (!map.is_empty())
                .then(|| serde_json::to_string(map))
                .transpose()?;
            sqlx::query(
                "UPDATE messages SET reactions = $1 WHERE conversation_id = $2 AND seq = $3",
            )
            .bind(text)
            .bind(id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
    }
    plan.write.apply_to(&mut target, ts);
    let notice = notice(tx, id, by, plan.notice, ts).await?;
    Ok(Ok(MessageChangeOutcome {
        notice: Some(notice),
        target,
        members,
        viewers,
    }))
}
