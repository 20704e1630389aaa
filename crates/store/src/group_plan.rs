//! The rules of a group change, once for every backend: who may add,
//! remove, change roles or settings, who is new, what each `system` notice
//! says. The backends (`sqlite/batch_changes.rs`, `postgres/groups.rs`)
//! read the facts, ask these functions, and write what they decided.

use std::sync::Arc;

use confab_proto::api::Role;
use confab_proto::error::ErrorCode;
use confab_proto::{SystemNotice, UserId};
use serde_json::Value;

use crate::types::*;

/// A stored role name as a role (unknown names are members).
pub(crate) fn parse_role(r: &str) -> Role {
    match r {
        "owner" => Role::Owner,
        "admin" => Role::Admin,
        _ => Role::Member,
    }
}

pub(crate) use crate::rows::role_name;

fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 2,
        Role::Admin => 1,
        Role::Member => 0,
    }
}

/// Who makes the change.
pub(crate) fn actor(change: &GroupChange) -> UserId {
    match change {
        GroupChange::Add { by, .. }
        | GroupChange::Remove { by, .. }
        | GroupChange::SetRole { by, .. }
        | GroupChange::Update { by, .. } => *by,
    }
}

/// The refusal for an actor who is not a member: a former member knows the
/// group (`Forbidden`), a stranger does not (`NotFound`).
pub(crate) fn outsider(was_member: bool) -> ErrorCode {
    if was_member {
        ErrorCode::Forbidden
    } else {
        ErrorCode::NotFound
    }
}

/// The outcome of a change that changed nothing.
pub(crate) fn unchanged(members_before: Arc<[UserId]>) -> GroupChangeOutcome {
    GroupChangeOutcome {
        notices: Vec::new(),
        added: Vec::new(),
        members_after: members_before.clone(),
        members_before,
    }
}

/// Whether `by_role` may add members.
pub(crate) fn may_add(by_role: Role, members_can_add: bool) -> Result<(), ErrorCode> {
    if by_role == Role::Member && !members_can_add {
        Err(ErrorCode::Forbidden)
    } else {
        Ok(())
    }
}

/// The users of an add who are not members yet, sorted, once each; a
/// group that would then pass `max_members` refuses them all.
pub(crate) fn newcomers(
    users: &[UserId],
    members_before: &[UserId],
    member_count: i64,
    max_members: i64,
) -> Result<Vec<UserId>, ErrorCode> {
    let mut fresh: Vec<UserId> = users
        .iter()
        .copied()
        .filter(|u| !members_before.contains(u))
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    if !fresh.is_empty() && member_count + fresh.len() as i64 > max_members {
        return Err(ErrorCode::GroupFull);
    }
    Ok(fresh)
}

/// Whether `by` may take `user` (of `target_role`) out: anyone may leave;
/// an owner or admin may remove a lower rank. The reason the notice gives.
pub(crate) fn may_remove(
    by: UserId,
    by_role: Role,
    user: UserId,
    target_role: Role,
) -> Result<&'static str, ErrorCode> {
    let leaving = user == by;
    if !leaving && (by_role == Role::Member || rank(by_role) <= rank(target_role)) {
        return Err(ErrorCode::Forbidden);
    }
    Ok(if leaving { "left" } else { "removed" })
}

/// Whether the owner may give `user` the role `role`; `Ok(false)` when
/// it is theirs already. The owner steps down only by handing ownership
/// to someone else.
pub(crate) fn may_set_role(
    by: UserId,
    by_role: Role,
    user: UserId,
    target_role: Role,
    role: Role,
) -> Result<bool, ErrorCode> {
    if by_role != Role::Owner {
        return Err(ErrorCode::Forbidden);
    }
    if target_role == role {
        return Ok(false);
    }
    if user == by {
        return Err(ErrorCode::BadRequest);
    }
    Ok(true)
}

/// Whether `by_role` may change the group's settings.
pub(crate) fn may_update(by_role: Role) -> Result<(), ErrorCode> {
    if by_role == Role::Member {
        Err(ErrorCode::Forbidden)
    } else {
        Ok(())
    }
}

/// The notice of members joining.
pub(crate) fn joined_notice(users: &[UserId], by: UserId) -> Value {
    SystemNotice::MemberJoined {
        by_user_id: by,
        user_ids: users.to_vec(),
    }
    .to_body()
}

/// The notice of a member leaving or being removed.
pub(crate) fn left_notice(user: UserId, by: UserId, reason: &str) -> Value {
    SystemNotice::MemberLeft {
        by_user_id: by,
        reason: reason.to_owned(),
        user_id: user,
    }
    .to_body()
}

/// The notice of a role change.
pub(crate) fn role_notice(user: UserId, role: Role, by: UserId) -> Value {
    SystemNotice::RoleChanged {
        by_user_id: by,
        role: role_name(role).to_owned(),
        user_id: user,
    }
    .to_body()
}

/// The notice of new settings.
pub(crate) fn updated_notice(
    title: Option<String>,
    avatar_media_id: Option<String>,
    members_can_add: bool,
    by: UserId,
) -> Value {
    SystemNotice::ConversationUpdated {
        avatar_media_id,
        by_user_id: by,
        members_can_add,
        title,
    }
    .to_body()
}
