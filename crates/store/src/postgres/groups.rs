//! Group changes (members, roles, settings), made inside the committer's
//! transaction so they take their place in the conversation's seq order:
//! every change writes a `system` message whose body names the event.
//!
//! The committer has locked the group's conversation row before any of this
//! runs, so every read here sees the committed state and nothing else can
//! change the group until the transaction ends.

use std::sync::Arc;

use confab_proto::api::Role;
use confab_proto::error::ErrorCode;
use confab_proto::{ConversationId, Millis, UserId};
use sqlx::{PgConnection, Row};

use super::notice::notice;
use super::rows::role_name;
use crate::group_plan as rules;
use crate::types::*;
use crate::Result;

/// A refusal: nothing of the change was written.
type Refusal = ErrorCode;

struct Group {
    kind: String,
    members_can_add: bool,
    member_count: i64,
}

async fn group(tx: &mut PgConnection, id: ConversationId) -> Result<Option<Group>> {
    let row =
        sqlx::query("SELECT kind, members_can_add, member_count FROM conversations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    row.map(|r| {
        Ok(Group {
            kind: r.try_get(0)?,
            members_can_add: r.try_get(1)?,
            member_count: r.try_get(2)?,
        })
    })
    .transpose()
}

async fn role_of(tx: &mut PgConnection, id: ConversationId, user: UserId) -> Result<Option<Role>> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM members WHERE conversation_id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(role.as_deref().map(rules::parse_role))
}

async fn member_ids(tx: &mut PgConnection, id: ConversationId) -> Result<Arc<[UserId]>> {
    let ids: Vec<UserId> = sqlx::query_scalar(
        "SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Arc::from(ids))
}

async fn was_member(tx: &mut PgConnection, id: ConversationId, user: UserId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM former_members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(id)
    .bind(user)
    .fetch_one(&mut *tx)
    .await?)
}

async fn set_role(
    tx: &mut PgConnection,
    id: ConversationId,
    user: UserId,
    role: Role,
) -> Result<()> {
    sqlx::query("UPDATE members SET role = $1 WHERE conversation_id = $2 AND user_id = $3")
        .bind(role_name(role))
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// PostgreSQL cannot store NUL in TEXT; such a value would fail the whole
/// batch, so the change is refused instead.
fn has_nul(s: Option<&str>) -> bool {
    s.is_some_and(|s| s.contains('\0'))
}

/// Applies one change. `Ok(Err(code))` is a refusal with nothing written.
pub(crate) async fn apply(
    tx: &mut PgConnection,
    change: &GroupChange,
    ts: Millis,
) -> Result<std::result::Result<GroupChangeOutcome, Refusal>> {
    let id = change.conversation_id();
    let by = rules::actor(change);
    let Some(g) = group(tx, id).await? else {
        return Ok(Err(ErrorCode::NotFound));
    };
    let Some(by_role) = role_of(tx, id, by).await? else {
        return Ok(Err(rules::outsider(was_member(tx, id, by).await?)));
    };
    if g.kind != "group" {
        return Ok(Err(ErrorCode::BadRequest));
    }
    let members_before = member_ids(tx, id).await?;
    let mut notices = Vec::new();
    let mut added = Vec::new();
    match change {
        GroupChange::Add {
            users, max_members, ..
        } => {
            if let Err(code) = rules::may_add(by_role, g.members_can_add) {
                return Ok(Err(code));
            }
            let fresh = match rules::newcomers(users, &members_before, g.member_count, *max_members)
            {
                Ok(fresh) => fresh,
                Err(code) => return Ok(Err(code)),
            };
            if fresh.is_empty() {
                return Ok(Ok(rules::unchanged(members_before)));
            }
            let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = ANY($1)")
                .bind(&fresh)
                .fetch_one(&mut *tx)
                .await?;
            if found != fresh.len() as i64 {
                return Ok(Err(ErrorCode::NotFound));
            }
            let body = rules::joined_notice(&fresh, by);
            let n = notice(tx, id, by, body, ts).await?;
            // New members see history from the notice of their joining on.
            let joined_seq = n.seq - 1;
            sqlx::query(
                "INSERT INTO members (conversation_id, user_id, role, joined_seq, read_seq, joined_at)
                 SELECT $1, u, 'member', $3, $3, $4 FROM UNNEST($2::bigint[]) AS u",
            )
            .bind(id)
            .bind(&fresh)
            .bind(joined_seq)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM former_members WHERE conversation_id = $1 AND user_id = ANY($2)",
            )
            .bind(id)
            .bind(&fresh)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE conversations SET member_count = member_count + $1 WHERE id = $2")
                .bind(fresh.len() as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            notices.push(n);
            added = fresh;
        }
        GroupChange::Remove { user, .. } => {
            let user = *user;
            let Some(target_role) = role_of(tx, id, user).await? else {
                return Ok(Err(ErrorCode::NotFound));
            };
            let reason = match rules::may_remove(by, by_role, user, target_role) {
                Ok(reason) => reason,
                Err(code) => return Ok(Err(code)),
            };
            let body = rules::left_notice(user, by, reason);
            let n = notice(tx, id, by, body, ts).await?;
            sqlx::query("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO former_members (conversation_id, user_id, left_seq) VALUES ($1, $2, $3)
                 ON CONFLICT (conversation_id, user_id) DO UPDATE SET left_seq = EXCLUDED.left_seq",
            )
            .bind(id)
            .bind(user)
            .bind(n.seq)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM mentions WHERE user_id = $1 AND conversation_id = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE conversations SET member_count = member_count - 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            notices.push(n);
            if target_role == Role::Owner {
                // Ownership passes to the longest-serving admin, else the
                // longest-serving member.
                let heir: Option<UserId> = sqlx::query_scalar(
                    "SELECT user_id FROM members WHERE conversation_id = $1
                     ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, joined_seq, user_id
                     LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(heir) = heir {
                    set_role(tx, id, heir, Role::Owner).await?;
                    let body = rules::role_notice(heir, Role::Owner, by);
                    notices.push(notice(tx, id, by, body, ts).await?);
                }
            }
        }
        GroupChange::SetRole { user, role, .. } => {
            let (user, role) = (*user, *role);
            let Some(target_role) = role_of(tx, id, user).await? else {
                return Ok(Err(ErrorCode::NotFound));
            };
            match rules::may_set_role(by, by_role, user, target_role, role) {
                Ok(true) => {}
                Ok(false) => return Ok(Ok(rules::unchanged(members_before))),
                Err(code) => return Ok(Err(code)),
            }
            set_role(tx, id, user, role).await?;
            let body = rules::role_notice(user, role, by);
            notices.push(notice(tx, id, by, body, ts).await?);
            if role == Role::Owner {
                set_role(tx, id, by, Role::Admin).await?;
                let body = rules::role_notice(by, Role::Admin, by);
                notices.push(notice(tx, id, by, body, ts).await?);
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
            if has_nul(title.as_deref())
                || has_nul(avatar_media_id.as_ref().and_then(|a| a.as_deref()))
            {
                return Ok(Err(ErrorCode::BadRequest));
            }
            let row = sqlx::query(
                "UPDATE conversations SET
                    title           = CASE WHEN $1 THEN $2 ELSE title END,
                    avatar_media_id = CASE WHEN $3 THEN $4 ELSE avatar_media_id END,
                    members_can_add = CASE WHEN $5 THEN $6 ELSE members_can_add END
                 WHERE id = $7 RETURNING title, avatar_media_id, members_can_add",
            )
            .bind(title.is_some())
            .bind(title.clone())
            .bind(avatar_media_id.is_some())
            .bind(avatar_media_id.clone().flatten())
            .bind(members_can_add.is_some())
            .bind(members_can_add.unwrap_or(false))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let title: Option<String> = row.try_get(0)?;
            let avatar: Option<String> = row.try_get(1)?;
            let can_add: bool = row.try_get(2)?;
            let body = rules::updated_notice(title, avatar, can_add, by);
            notices.push(notice(tx, id, by, body, ts).await?);
        }
    }
    let members_after = member_ids(tx, id).await?;
    Ok(Ok(GroupChangeOutcome {
        notices,
        added,
        members_before,
        members_after,
    }))
}
