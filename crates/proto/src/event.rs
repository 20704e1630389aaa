//! The typed vocabulary of what happens around messages: the body of a
//! `system` message ([`SystemNotice`]), and the `event` frame that tells the
//! devices concerned ([`Event`]). Both are tagged by `event` on the wire.
//!
//! Fields are declared in alphabetical order: that is the order the server
//! wrote them in when these were untyped JSON objects, so the wire text is
//! the same byte for byte (the snapshot tests below hold it). A notice is
//! stored as a JSON value ([`SystemNotice::to_body`]), whose keys are
//! sorted, `event` among them, as before.

use serde::{Deserialize, Serialize};

use crate::api::{Friend, FriendRequest};
use crate::{ConversationId, MessageRecord, Millis, Seq, UserId};

/// The body of a `system` message: a change to the conversation, stored in
/// its seq order like any message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SystemNotice {
    /// A group was made (its first message).
    GroupCreated {
        /// Who made it (the owner).
        by_user_id: UserId,
        /// Its title.
        title: String,
    },
    /// Users joined a group.
    MemberJoined {
        /// Who added them.
        by_user_id: UserId,
        /// Who joined.
        user_ids: Vec<UserId>,
    },
    /// A member left or was removed.
    MemberLeft {
        /// Who removed them (themselves when they left).
        by_user_id: UserId,
        /// `left` or `removed`.
        reason: String,
        /// Who left.
        user_id: UserId,
    },
    /// A member's role changed.
    RoleChanged {
        /// Who changed it.
        by_user_id: UserId,
        /// The new role (`owner`, `admin`, `member`).
        role: String,
        /// Whose role.
        user_id: UserId,
    },
    /// A group's settings changed; the fields are the settings now.
    ConversationUpdated {
        /// The avatar now.
        avatar_media_id: Option<String>,
        /// Who changed them.
        by_user_id: UserId,
        /// Whether plain members may add members.
        members_can_add: bool,
        /// The title now.
        title: Option<String>,
    },
    /// A message was edited.
    MessageEdited {
        /// When.
        edited_at: Millis,
        /// The edited message's seq.
        target_seq: Seq,
    },
    /// A message was deleted for everyone.
    MessageDeleted {
        /// The deleted message's seq.
        target_seq: Seq,
    },
    /// A user's reaction on a message changed.
    ReactionChanged {
        /// The reaction now (none: taken off).
        emoji: Option<String>,
        /// The reaction before.
        previous: Option<String>,
        /// The message's seq.
        target_seq: Seq,
        /// Whose reaction.
        user_id: UserId,
    },
    /// A call in the conversation is over (one per call; its sender is the
    /// caller).
    CallEnded {
        /// The call's id.
        call_id: String,
        /// How long it was connected, from `accept` to `hangup` (0 when it
        /// never was).
        duration_ms: u64,
        /// `audio` or `video`, as invited.
        media: String,
        /// `answered`, `missed` (nobody took it in time, or the caller
        /// cancelled first), `declined` or `busy`.
        outcome: String,
    },
}

/// An `event` frame: something a device should know at once. Events that
/// come from a [`SystemNotice`] carry its fields, the conversation and the
/// notice's own `seq`; message changes also carry the changed message, to
/// members who can see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A friend request to or from me.
    FriendRequest {
        /// The request.
        request: FriendRequest,
    },
    /// A friend request was accepted: we are friends.
    FriendAccepted {
        /// The new friend, with presence.
        friend: Friend,
        /// The request that was accepted.
        request_id: i64,
    },
    /// A friendship ended.
    FriendRemoved {
        /// The former friend.
        user_id: UserId,
    },
    /// I am now a member of a conversation.
    ConversationAdded {
        /// Who added me (or made it).
        by_user_id: UserId,
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// See [`SystemNotice::GroupCreated`].
    GroupCreated {
        /// Who made it.
        by_user_id: UserId,
        /// The group.
        conversation_id: ConversationId,
        /// The notice's seq.
        seq: Seq,
        /// Its title.
        title: String,
    },
    /// See [`SystemNotice::MemberJoined`].
    MemberJoined {
        /// Who added them.
        by_user_id: UserId,
        /// The group.
        conversation_id: ConversationId,
        /// The notice's seq.
        seq: Seq,
        /// Who joined.
        user_ids: Vec<UserId>,
    },
    /// See [`SystemNotice::MemberLeft`].
    MemberLeft {
        /// Who removed them.
        by_user_id: UserId,
        /// The group.
        conversation_id: ConversationId,
        /// `left` or `removed`.
        reason: String,
        /// The notice's seq.
        seq: Seq,
        /// Who left.
        user_id: UserId,
    },
    /// See [`SystemNotice::RoleChanged`].
    RoleChanged {
        /// Who changed it.
        by_user_id: UserId,
        /// The group.
        conversation_id: ConversationId,
        /// The new role.
        role: String,
        /// The notice's seq.
        seq: Seq,
        /// Whose role.
        user_id: UserId,
    },
    /// See [`SystemNotice::ConversationUpdated`].
    ConversationUpdated {
        /// The avatar now.
        avatar_media_id: Option<String>,
        /// Who changed the settings.
        by_user_id: UserId,
        /// The group.
        conversation_id: ConversationId,
        /// Whether plain members may add members.
        members_can_add: bool,
        /// The notice's seq.
        seq: Seq,
        /// The title now.
        title: Option<String>,
    },
    /// See [`SystemNotice::MessageEdited`].
    MessageEdited {
        /// The conversation.
        conversation_id: ConversationId,
        /// When.
        edited_at: Millis,
        /// The message as it is now (to members who can see it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Box<MessageRecord>>,
        /// The notice's seq.
        seq: Seq,
        /// The edited message's seq.
        target_seq: Seq,
    },
    /// See [`SystemNotice::MessageDeleted`].
    MessageDeleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message as it is now (to members who can see it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Box<MessageRecord>>,
        /// The notice's seq.
        seq: Seq,
        /// The deleted message's seq.
        target_seq: Seq,
    },
    /// See [`SystemNotice::ReactionChanged`].
    ReactionChanged {
        /// The conversation.
        conversation_id: ConversationId,
        /// The reaction now.
        emoji: Option<String>,
        /// The message as it is now (to members who can see it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Box<MessageRecord>>,
        /// The notice's seq.
        seq: Seq,
        /// The reaction before.
        previous: Option<String>,
        /// The message's seq.
        target_seq: Seq,
        /// Whose reaction.
        user_id: UserId,
    },
    /// See [`SystemNotice::CallEnded`].
    CallEnded {
        /// The call's id.
        call_id: String,
        /// The conversation.
        conversation_id: ConversationId,
        /// How long it was connected (0 when it never was).
        duration_ms: u64,
        /// `audio` or `video`.
        media: String,
        /// `answered`, `missed`, `declined` or `busy`.
        outcome: String,
        /// The notice's seq.
        seq: Seq,
    },
    /// An event this version does not know (from a newer server): ignore it.
    #[serde(other)]
    Unknown,
}

impl SystemNotice {
    /// The `event` frame that announces this notice, which has `seq` in
    /// `conversation_id`; `message` is the changed message for a message
    /// change (to members who can see it).
    pub fn into_event(
        self,
        conversation_id: ConversationId,
        seq: Seq,
        message: Option<MessageRecord>,
    ) -> Event {
        let message = message.map(Box::new);
        match self {
            SystemNotice::GroupCreated { by_user_id, title } => Event::GroupCreated {
                by_user_id,
                conversation_id,
                seq,
                title,
            },
            SystemNotice::MemberJoined {
                by_user_id,
                user_ids,
            } => Event::MemberJoined {
                by_user_id,
                conversation_id,
                seq,
                user_ids,
            },
            SystemNotice::MemberLeft {
                by_user_id,
                reason,
                user_id,
            } => Event::MemberLeft {
                by_user_id,
                conversation_id,
                reason,
                seq,
                user_id,
            },
            SystemNotice::RoleChanged {
                by_user_id,
                role,
                user_id,
            } => Event::RoleChanged {
                by_user_id,
                conversation_id,
                role,
                seq,
                user_id,
            },
            SystemNotice::ConversationUpdated {
                avatar_media_id,
                by_user_id,
                members_can_add,
                title,
            } => Event::ConversationUpdated {
                avatar_media_id,
                by_user_id,
                conversation_id,
                members_can_add,
                seq,
                title,
            },
            SystemNotice::MessageEdited {
                edited_at,
                target_seq,
            } => Event::MessageEdited {
                conversation_id,
                edited_at,
                message,
                seq,
                target_seq,
            },
            SystemNotice::MessageDeleted { target_seq } => Event::MessageDeleted {
                conversation_id,
                message,
                seq,
                target_seq,
            },
            SystemNotice::ReactionChanged {
                emoji,
                previous,
                target_seq,
                user_id,
            } => Event::ReactionChanged {
                conversation_id,
                emoji,
                message,
                seq,
                previous,
                target_seq,
                user_id,
            },
            SystemNotice::CallEnded {
                call_id,
                duration_ms,
                media,
                outcome,
            } => Event::CallEnded {
                call_id,
                conversation_id,
                duration_ms,
                media,
                outcome,
                seq,
            },
        }
    }

    /// The notice as the JSON body of a `system` message.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Event {
    /// The event's name on the wire (`friend_request`, `member_joined`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Event::FriendRequest { .. } => "friend_request",
            Event::FriendAccepted { .. } => "friend_accepted",
            Event::FriendRemoved { .. } => "friend_removed",
            Event::ConversationAdded { .. } => "conversation_added",
            Event::GroupCreated { .. } => "group_created",
            Event::MemberJoined { .. } => "member_joined",
            Event::MemberLeft { .. } => "member_left",
            Event::RoleChanged { .. } => "role_changed",
            Event::ConversationUpdated { .. } => "conversation_updated",
            Event::MessageEdited { .. } => "message_edited",
            Event::MessageDeleted { .. } => "message_deleted",
            Event::ReactionChanged { .. } => "reaction_changed",
            Event::CallEnded { .. } => "call_ended",
            Event::Unknown => "unknown",
        }
    }

    /// The event's fields as a JSON object, without `event` (for generic
    /// clients: printing, scripting).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("event");
                map
            }
            _ => serde_json::Map::new(),
        }
    }

    /// The conversation the event is about, if any.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        match self {
            Event::ConversationAdded {
                conversation_id, ..
            }
            | Event::GroupCreated {
                conversation_id, ..
            }
            | Event::MemberJoined {
                conversation_id, ..
            }
            | Event::MemberLeft {
                conversation_id, ..
            }
            | Event::RoleChanged {
                conversation_id, ..
            }
            | Event::ConversationUpdated {
                conversation_id, ..
            }
            | Event::MessageEdited {
                conversation_id, ..
            }
            | Event::MessageDeleted {
                conversation_id, ..
            }
            | Event::ReactionChanged {
                conversation_id, ..
            }
            | Event::CallEnded {
                conversation_id, ..
            } => Some(*conversation_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The wire text of notices as the untyped server wrote them: the
    /// typed ones must read it and write it again byte for byte.
    #[test]
    fn notices_keep_their_wire_text() {
        let cases = [
            json!({"event": "group_created", "title": "t", "by_user_id": 1}),
            json!({"event": "member_joined", "user_ids": [2, 3], "by_user_id": 1}),
            json!({"event": "member_left", "user_id": 2, "by_user_id": 1, "reason": "removed"}),
            json!({"event": "role_changed", "user_id": 2, "role": "admin", "by_user_id": 1}),
            json!({"event": "conversation_updated", "title": "t", "avatar_media_id": null, "members_can_add": true, "by_user_id": 1}),
            json!({"event": "message_edited", "target_seq": 4, "edited_at": 99}),
            json!({"event": "message_deleted", "target_seq": 4}),
            json!({"event": "reaction_changed", "target_seq": 4, "user_id": 2, "emoji": "👍", "previous": null}),
            json!({"event": "call_ended", "call_id": "c1", "duration_ms": 1200, "media": "video", "outcome": "answered"}),
        ];
        for untyped in cases {
            let typed: SystemNotice = serde_json::from_value(untyped.clone()).expect("typed");
            // Stored and sent as a JSON value, whose keys are sorted.
            assert_eq!(
                typed.to_body().to_string(),
                untyped.to_string(),
                "{typed:?}"
            );
        }
    }

    #[test]
    fn events_keep_their_wire_text_and_unknown_ones_are_tolerated() {
        let e = SystemNotice::MemberJoined {
            by_user_id: 1,
            user_ids: vec![2],
        }
        .into_event(7, 3, None);
        let mut untyped = json!({"by_user_id": 1, "user_ids": [2], "conversation_id": 7, "seq": 3});
        assert_eq!(
            serde_json::to_string(&e).expect("encode"),
            format!(r#"{{"event":"member_joined",{}"#, &untyped.to_string()[1..])
        );
        untyped["event"] = json!("something_new");
        let unknown: Event = serde_json::from_value(untyped).expect("decode");
        assert_eq!(unknown, Event::Unknown);
    }
}
