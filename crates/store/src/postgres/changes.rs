//! Edits, deletions for everyone and reactions, made inside the
//! committer's transaction so they take their place in the conversation's
//! seq order: each updates the target row and appends a `system` notice.
//!
//! The committer has locked the conversation row before any of this runs,
//! so nothing else changes the conversation until the transaction ends.
//! The rules are shared with SQLite (`sqlite::changes::plan`).

use std::sync::Arc;

use confab_proto::error::ErrorCode;
use confab_proto::{MessageKind, Millis, Seq, UserId};
use serde_json::json;
use sqlx::PgConnection;

use super::notice::notice;
use super::rows::{self, MESSAGE_COLUMNS};
use crate::sqlite::changes::{plan, Write};
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
    let seq = match change {
        MessageChange::Edit { seq, .. }
        | MessageChange::Delete { seq, .. }
        | MessageChange::React { seq, .. } => *seq,
    };
    let roster: Vec<(UserId, String, Seq)> = sqlx::query_as(
        "SELECT user_id, role, joined_seq FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let Some((_, role, joined)) = roster.iter().find(|(u, _, _)| *u == by).cloned() else {
        let former: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM former_members WHERE conversation_id = $1 AND user_id = $2)",
        )
        .bind(id)
        .bind(by)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(Err(if former {
            ErrorCode::Forbidden
        } else {
            ErrorCode::NotFound
        }));
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
    if target.seq <= joined {
        return Ok(Err(ErrorCode::NotFound));
    }
    if target.kind == MessageKind::System {
        return Ok(Err(ErrorCode::BadRequest));
    }
    let members: Arc<[UserId]> = roster.iter().map(|(u, _, _)| *u).collect();
    let viewers: Arc<[UserId]> = roster
        .iter()
        .filter(|(_, _, j)| *j < seq)
        .map(|(u, _, _)| *u)
        .collect();
    let kind: String = sqlx::query_scalar("SELECT kind FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let plan = match plan(change, &target, &kind, &role, ts) {
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
            target.body = body.clone();
            target.edited_at = Some(ts);
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
            target.body = json!({});
            target.deleted = true;
            target.reactions.clear();
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
            target.reactions = map.clone();
        }
    }
    let notice = notice(tx, id, by, plan.notice, ts).await?;
    Ok(Ok(MessageChangeOutcome {
        notice: Some(notice),
        target,
        members,
        viewers,
    }))
}
