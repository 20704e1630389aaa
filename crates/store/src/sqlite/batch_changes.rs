//! Group changes (members, roles, settings) and message changes (edits,
//! deletions, reactions) on the writer thread, inside the batch's
//! transaction, so they take their place in the conversation's seq order:
//! each writes `system` notices. The rules of a message change are in
//! [`crate::change_plan`], shared with PostgreSQL; those of a group change
//! in [`crate::group_plan`].

use std::sync::Arc;

use confab_proto::api::Role;
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, MessageKind, MessageRecord, Millis, Seq, UserId};
use rusqlite::{params_from_iter, OptionalExtension, Transaction};
use serde_json::Value;

use super::rows::MESSAGE_COLUMNS;
use crate::change_plan::{self as rules_of_changes, Write};
use crate::group_plan as rules;
use crate::types::*;
use crate::{Result, StoreError};

/// A refusal: nothing of the change was written.
type Refusal = ErrorCode;

/// A message row (columns [`MESSAGE_COLUMNS`]) as a record.
fn message(row: &rusqlite::Row<'_>) -> Result<MessageRecord> {
    let kind: String = row.get(4)?;
    let body: String = row.get(5)?;
    let reactions: Option<String> = row.get(9)?;
    Ok(MessageRecord {
        conversation_id: row.get(0)?,
        seq: row.get(1)?,
        sender_id: row.get(2)?,
        client_msg_id: row.get(3)?,
        kind: MessageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message kind {kind:?}")))?,
        body: serde_json::from_str(&body)?,
        ts: row.get(6)?,
        read_by: None,
        edited_at: row.get(7)?,
        deleted: row.get::<_, Option<i64>>(8)?.is_some(),
        reactions: match reactions {
            Some(r) => serde_json::from_str(&r)?,
            None => Default::default(),
        },
    })
}

fn role_of(tx: &Transaction<'_>, id: ConversationId, user: UserId) -> Result<Option<Role>> {
    let role: Option<String> = tx
        .prepare_cached("SELECT role FROM members WHERE conversation_id = ? AND user_id = ?")?
        .query_row((id, user), |r| r.get(0))
        .optional()?;
    Ok(role.as_deref().map(rules::parse_role))
}

fn member_ids(tx: &Transaction<'_>, id: ConversationId) -> Result<Arc<[UserId]>> {
    let mut st = tx
        .prepare_cached("SELECT user_id FROM members WHERE conversation_id = ? ORDER BY user_id")?;
    let ids = st
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<UserId>>>()?;
    Ok(Arc::from(ids))
}

fn was_member(tx: &Transaction<'_>, id: ConversationId, user: UserId) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM former_members WHERE conversation_id = ? AND user_id = ?")?
        .query_row((id, user), |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

fn set_role(tx: &Transaction<'_>, id: ConversationId, user: UserId, role: Role) -> Result<()> {
    tx.prepare_cached("UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?")?
        .execute((rules::role_name(role), id, user))?;
    Ok(())
}

/// Appends one `system` message and returns it.
fn notice(
    tx: &Transaction<'_>,
    id: ConversationId,
    by: UserId,
    body: Value,
    ts: Millis,
) -> Result<MessageRecord> {
    let seq: Seq = tx
        .prepare_cached(
            "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
        )?
        .query_row([id], |r| r.get(0))?;
    let record = crate::rows::system_message(id, seq, by, body, ts);
    tx.prepare_cached(
        "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body, ts)
         VALUES (?, ?, ?, ?, 'system', ?, ?)",
    )?
    .execute((
        id,
        seq,
        by,
        &record.client_msg_id,
        record.body.to_string(),
        ts,
    ))?;
    Ok(record)
}

/// Applies one group change. `Ok(Err(code))` is a refusal with nothing
/// written.
pub(crate) fn apply_group(
    tx: &Transaction<'_>,
    change: &GroupChange,
    ts: Millis,
) -> Result<std::result::Result<GroupChangeOutcome, Refusal>> {
    let id = change.conversation_id();
    let by = rules::actor(change);
    let g: Option<(String, bool, i64)> = tx
        .prepare_cached(
            "SELECT kind, members_can_add, member_count FROM conversations WHERE id = ?",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((kind, members_can_add, member_count)) = g else {
        return Ok(Err(ErrorCode::NotFound));
    };
    let Some(by_role) = role_of(tx, id, by)? else {
        return Ok(Err(rules::outsider(was_member(tx, id, by)?)));
    };
    if kind != "group" {
        return Ok(Err(ErrorCode::BadRequest));
    }
    let members_before = member_ids(tx, id)?;
    let mut notices = Vec::new();
    let mut added = Vec::new();
    match change {
        GroupChange::Add {
            users, max_members, ..
        } => {
            if let Err(code) = rules::may_add(by_role, members_can_add) {
                return Ok(Err(code));
            }
            let fresh = match rules::newcomers(users, &members_before, member_count, *max_members) {
                Ok(fresh) => fresh,
                Err(code) => return Ok(Err(code)),
            };
            if fresh.is_empty() {
                return Ok(Ok(rules::unchanged(members_before)));
            }
            for chunk in fresh.chunks(500) {
                let found: i64 = tx
                    .prepare(&format!(
                        "SELECT COUNT(*) FROM users WHERE id IN ({})",
                        vec!["?"; chunk.len()].join(", ")
                    ))?
                    .query_row(params_from_iter(chunk.iter()), |r| r.get(0))?;
                if found != chunk.len() as i64 {
                    return Ok(Err(ErrorCode::NotFound));
                }
            }
            let body = rules::joined_notice(&fresh, by);
            let n = notice(tx, id, by, body, ts)?;
            // New members see history from the notice of their joining on.
            let joined_seq = n.seq - 1;
            for &u in &fresh {
                tx.prepare_cached(
                    "INSERT INTO members (conversation_id, user_id, role, joined_seq, read_seq, joined_at)
                     VALUES (?, ?, 'member', ?, ?, ?)",
                )?
                .execute((id, u, joined_seq, joined_seq, ts))?;
                tx.prepare_cached(
                    "DELETE FROM former_members WHERE conversation_id = ? AND user_id = ?",
                )?
                .execute((id, u))?;
            }
            tx.prepare_cached(
                "UPDATE conversations SET member_count = member_count + ? WHERE id = ?",
            )?
            .execute((fresh.len() as i64, id))?;
            notices.push(n);
            added = fresh;
        }
        GroupChange::Remove { user, .. } => {
            let user = *user;
            let Some(target_role) = role_of(tx, id, user)? else {
                return Ok(Err(ErrorCode::NotFound));
            };
            let reason = match rules::may_remove(by, by_role, user, target_role) {
                Ok(reason) => reason,
                Err(code) => return Ok(Err(code)),
            };
            let body = rules::left_notice(user, by, reason);
            let n = notice(tx, id, by, body, ts)?;
            tx.prepare_cached("DELETE FROM members WHERE conversation_id = ? AND user_id = ?")?
                .execute((id, user))?;
            tx.prepare_cached(
                "INSERT INTO former_members (conversation_id, user_id, left_seq) VALUES (?, ?, ?)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET left_seq = excluded.left_seq",
            )?
            .execute((id, user, n.seq))?;
            tx.prepare_cached("DELETE FROM mentions WHERE user_id = ? AND conversation_id = ?")?
                .execute((user, id))?;
            tx.prepare_cached(
                "UPDATE conversations SET member_count = member_count - 1 WHERE id = ?",
            )?
            .execute([id])?;
            notices.push(n);
            if target_role == Role::Owner {
                // Ownership passes to the longest-serving admin, else the
                // longest-serving member.
                let heir: Option<UserId> = tx
                    .prepare_cached(
                        "SELECT user_id FROM members WHERE conversation_id = ?
                         ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, joined_seq, user_id
                         LIMIT 1",
                    )?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                if let Some(heir) = heir {
                    set_role(tx, id, heir, Role::Owner)?;
                    let body = rules::role_notice(heir, Role::Owner, by);
                    notices.push(notice(tx, id, by, body, ts)?);
                }
            }
        }
        GroupChange::SetRole { user, role, .. } => {
            let (user, role) = (*user, *role);
            let Some(target_role) = role_of(tx, id, user)? else {
                return Ok(Err(ErrorCode::NotFound));
            };
            match rules::may_set_role(by, by_role, user, target_role, role) {
                Ok(true) => {}
                Ok(false) => return Ok(Ok(rules::unchanged(members_before))),
                Err(code) => return Ok(Err(code)),
            }
            set_role(tx, id, user, role)?;
            let body = rules::role_notice(user, role, by);
            notices.push(notice(tx, id, by, body, ts)?);
            if role == Role::Owner {
                set_role(tx, id, by, Role::Admin)?;
                let body = rules::role_notice(by, Role::Admin, by);
                notices.push(notice(tx, id, by, body, ts)?);
            }
        }
        GroupChange::Update {
            title,
            avatar_media_id,
            members_can_add,
            ..
        } => {
            if let Err(code) = rules::may_update(by_role) {
                return Ok(Err(code));
            }
            let (title, avatar, can_add): (Option<String>, Option<String>, bool) = tx
                .prepare_cached(
                    "UPDATE conversations SET
                        title           = CASE WHEN ?1 THEN ?2 ELSE title END,
                        avatar_media_id = CASE WHEN ?3 THEN ?4 ELSE avatar_media_id END,
                        members_can_add = CASE WHEN ?5 THEN ?6 ELSE members_can_add END
                     WHERE id = ?7 RETURNING title, avatar_media_id, members_can_add",
                )?
                .query_row(
                    (
                        title.is_some(),
                        title.clone(),
                        avatar_media_id.is_some(),
                        avatar_media_id.clone().flatten(),
                        members_can_add.is_some(),
                        members_can_add.unwrap_or(false),
                        id,
                    ),
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
            let body = rules::updated_notice(title, avatar, can_add, by);
            notices.push(notice(tx, id, by, body, ts)?);
        }
    }
    let members_after = member_ids(tx, id)?;
    Ok(Ok(GroupChangeOutcome {
        notices,
        added,
        members_before,
        members_after,
    }))
}

/// Applies one message change. `Ok(Err(code))` is a refusal with nothing
/// written.
pub(crate) fn apply_message(
    tx: &Transaction<'_>,
    change: &MessageChange,
    ts: Millis,
) -> Result<std::result::Result<MessageChangeOutcome, ErrorCode>> {
    let id = change.conversation_id();
    let by = change.actor();
    let seq = rules_of_changes::target_seq(change);
    let roster: rules_of_changes::Roster = tx
        .prepare_cached(
            "SELECT user_id, role, joined_seq FROM members WHERE conversation_id = ? ORDER BY user_id",
        )?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some((role, joined)) = rules_of_changes::actor(&roster, by) else {
        return Ok(Err(rules_of_changes::outsider(was_member(tx, id, by)?)));
    };
    let mut st = tx.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq = ?"
    ))?;
    let mut rows = st.query((id, seq))?;
    let Some(row) = rows.next()? else {
        return Ok(Err(ErrorCode::NotFound));
    };
    let mut target = message(row)?;
    drop(rows);
    drop(st);
    if let Some(code) = rules_of_changes::refuse_target(&target, joined) {
        return Ok(Err(code));
    }
    let (members, viewers) = rules_of_changes::audience(&roster, seq);
    let kind: String = tx
        .prepare_cached("SELECT kind FROM conversations WHERE id = ?")?
        .query_row([id], |r| r.get(0))?;
    let plan = match rules_of_changes::plan(change, &target, &kind, &role, ts) {
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
            tx.prepare_cached(
                "UPDATE messages SET body = ?, edited_at = ? WHERE conversation_id = ? AND seq = ?",
            )?
            .execute((body.to_string(), ts, id, seq))?;
        }
        Write::Tombstone => {
            tx.prepare_cached(
                "UPDATE messages SET body = '{}', deleted_at = ?, reactions = NULL
                 WHERE conversation_id = ? AND seq = ?",
            )?
            .execute((ts, id, seq))?;
            tx.prepare_cached("DELETE FROM mentions WHERE conversation_id = ? AND seq = ?")?
                .execute((id, seq))?;
            // Its media is no longer reachable through it.
            if let Some(media_id) = target.body.get("media_id").and_then(|v| v.as_str()) {
                tx.prepare_cached(
                    "DELETE FROM message_media WHERE media_id = ? AND conversation_id = ? AND seq = ?",
                )?
                .execute((media_id, id, seq))?;
            }
        }
        Write::Reactions(map) => {
            let text = (!map.is_empty())
                .then(|| serde_json::to_string(map))
                .transpose()?;
            tx.prepare_cached(
                "UPDATE messages SET reactions = ? WHERE conversation_id = ? AND seq = ?",
            )?
            .execute((text, id, seq))?;
        }
    }
    plan.write.apply_to(&mut target, ts);
    let notice = notice(tx, id, by, plan.notice, ts)?;
    Ok(Ok(MessageChangeOutcome {
        notice: Some(notice),
        target,
        members,
        viewers,
    }))
}
