//! The HTTP API calls for users, conversations and messages (DESIGN §4).

use confab_proto::api::{
    Conversation, ConversationList, CreateConversationRequest, MessagePage, ReadRequest,
    SendMessageRequest, SendMessageResponse, UpdateProfileRequest, User, UserList,
};
use confab_proto::{ConversationId, MessageKind, Seq, UserId};
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::error::Result;

/// Which page of history to fetch: messages before `before_seq` (newest
/// first page when neither bound is set), or after `after_seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a seq below this.
    pub before_seq: Option<Seq>,
    /// Only messages with a seq above this.
    pub after_seq: Option<Seq>,
    /// At most this many (the server caps it).
    pub limit: Option<u32>,
}

impl HistoryQuery {
    /// The page after `seq` (oldest first), at most `limit` messages.
    pub fn after(seq: Seq, limit: u32) -> HistoryQuery {
        HistoryQuery {
            after_seq: Some(seq),
            limit: Some(limit),
            ..HistoryQuery::default()
        }
    }

    /// The page before `seq`, at most `limit` messages.
    pub fn before(seq: Seq, limit: u32) -> HistoryQuery {
        HistoryQuery {
            before_seq: Some(seq),
            limit: Some(limit),
            ..HistoryQuery::default()
        }
    }

    fn to_query(self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.before_seq {
            q.push(("before_seq", s.to_string()));
        }
        if let Some(s) = self.after_seq {
            q.push(("after_seq", s.to_string()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        q
    }
}

/// A fresh `client_msg_id`: a UUID v7 (time-ordered), as text.
pub fn new_client_msg_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Client {
    /// The logged-in user's profile.
    pub async fn me(&self) -> Result<User> {
        self.call(Method::GET, "/v1/users/me", &[], None::<&()>)
            .await
    }

    /// Changes the logged-in user's profile; fields left `None` stay.
    pub async fn update_me(&self, patch: &UpdateProfileRequest) -> Result<User> {
        self.call(Method::PATCH, "/v1/users/me", &[], Some(patch))
            .await
    }

    /// Users whose username starts with `q`.
    pub async fn search_users(&self, q: &str) -> Result<Vec<User>> {
        let list: UserList = self
            .call(
                Method::GET,
                "/v1/users",
                &[("q", q.to_owned())],
                None::<&()>,
            )
            .await?;
        Ok(list.users)
    }

    /// Profiles of several users at once (at most 100 ids; unknown ids are
    /// left out), by id.
    pub async fn users(&self, ids: &[UserId]) -> Result<Vec<User>> {
        let list = ids
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let list: UserList = self
            .call(Method::GET, "/v1/users", &[("ids", list)], None::<&()>)
            .await?;
        Ok(list.users)
    }

    /// One user's profile.
    pub async fn user(&self, id: UserId) -> Result<User> {
        self.call(Method::GET, &format!("/v1/users/{id}"), &[], None::<&()>)
            .await
    }

    /// Gets (or creates) the direct conversation with `user_id`.
    pub async fn direct_conversation(&self, user_id: UserId) -> Result<Conversation> {
        let req = CreateConversationRequest::Direct {
            user_id,
            encrypted: false,
        };
        self.call(Method::POST, "/v1/conversations", &[], Some(&req))
            .await
    }

    /// Gets (or creates) the end-to-end encrypted direct conversation with
    /// `user_id` (a conversation of its own, apart from the plain one).
    /// Only the server side: [`crate::E2ee::create_direct`] also makes the
    /// MLS group.
    pub async fn encrypted_direct_conversation(&self, user_id: UserId) -> Result<Conversation> {
        let req = CreateConversationRequest::Direct {
            user_id,
            encrypted: true,
        };
        self.call(Method::POST, "/v1/conversations", &[], Some(&req))
            .await
    }

    /// Creates a group with the caller as owner and `member_ids` as members.
    pub async fn create_group(&self, title: &str, member_ids: &[UserId]) -> Result<Conversation> {
        let req = CreateConversationRequest::Group {
            title: title.to_owned(),
            member_ids: member_ids.to_vec(),
            encrypted: false,
        };
        self.call(Method::POST, "/v1/conversations", &[], Some(&req))
            .await
    }

    /// Creates an end-to-end encrypted group (server side only:
    /// [`crate::E2ee::create_group`] also makes the MLS group).
    pub async fn create_encrypted_group(
        &self,
        title: &str,
        member_ids: &[UserId],
    ) -> Result<Conversation> {
        let req = CreateConversationRequest::Group {
            title: title.to_owned(),
            member_ids: member_ids.to_vec(),
            encrypted: true,
        };
        self.call(Method::POST, "/v1/conversations", &[], Some(&req))
            .await
    }

    /// The caller's conversations, newest activity first.
    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        let list: ConversationList = self
            .call(Method::GET, "/v1/conversations", &[], None::<&()>)
            .await?;
        Ok(list.conversations)
    }

    /// One conversation's details.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        self.call(
            Method::GET,
            &format!("/v1/conversations/{id}"),
            &[],
            None::<&()>,
        )
        .await
    }

    /// A page of a conversation's history (ascending seq).
    pub async fn history(&self, id: ConversationId, query: HistoryQuery) -> Result<MessagePage> {
        self.call(
            Method::GET,
            &format!("/v1/conversations/{id}/messages"),
            &query.to_query(),
            None::<&()>,
        )
        .await
    }

    /// Sends a message over HTTP (no WebSocket needed). Resending the same
    /// `client_msg_id` returns the original seq.
    pub async fn send_http(
        &self,
        id: ConversationId,
        client_msg_id: &str,
        kind: MessageKind,
        body: Value,
    ) -> Result<SendMessageResponse> {
        let req = SendMessageRequest {
            client_msg_id: client_msg_id.to_owned(),
            kind,
            body,
        };
        self.call(
            Method::POST,
            &format!("/v1/conversations/{id}/messages"),
            &[],
            Some(&req),
        )
        .await
    }

    /// Moves the caller's read cursor in a conversation to `seq`.
    pub async fn mark_read(&self, id: ConversationId, seq: Seq) -> Result<()> {
        self.request_empty(
            Method::POST,
            &format!("/v1/conversations/{id}/read"),
            Some(&ReadRequest { seq }),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_params() {
        assert!(HistoryQuery::default().to_query().is_empty());
        assert_eq!(
            HistoryQuery::after(5, 50).to_query(),
            vec![("after_seq", "5".to_owned()), ("limit", "50".to_owned())]
        );
        assert_eq!(
            HistoryQuery::before(9, 2).to_query(),
            vec![("before_seq", "9".to_owned()), ("limit", "2".to_owned())]
        );
    }

    #[test]
    fn client_msg_ids_are_valid_and_unique() {
        let a = new_client_msg_id();
        let b = new_client_msg_id();
        assert_ne!(a, b);
        assert!(confab_proto::validate::check_client_msg_id(&a).is_ok());
    }
}
