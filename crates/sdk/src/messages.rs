//! Message changes (edit, delete for everyone, reactions), pages around a
//! seq, and full-text search over HTTP.

use confab_proto::api::{EditMessageRequest, MessagePage, SearchResults};
use confab_proto::{ConversationId, MessageRecord, Millis, Seq, UserId};
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::error::Result;

/// Filters and paging of [`Client::search_messages`].
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Only this conversation.
    pub conversation_id: Option<ConversationId>,
    /// Only this sender.
    pub sender_id: Option<UserId>,
    /// Only messages committed before this time (ms).
    pub before: Option<Millis>,
    /// Only messages committed after this time (ms).
    pub after: Option<Millis>,
    /// Page size (at most 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Percent-encodes one path segment (every byte but unreserved ones).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// Edits my message: `{"text": …}` for a text message, `{"caption": …}`
    /// for a media one. Returns the message as it is now.
    pub async fn edit_message(
        &self,
        id: ConversationId,
        seq: Seq,
        body: Value,
    ) -> Result<MessageRecord> {
        let req = EditMessageRequest { body };
        self.call(
            Method::PATCH,
            &format!("/v1/conversations/{id}/messages/{seq}"),
            &[],
            Some(&req),
        )
        .await
    }

    /// Deletes a message for everyone (mine, or any as a group owner/admin).
    pub async fn delete_message(&self, id: ConversationId, seq: Seq) -> Result<()> {
        self.request_empty(
            Method::DELETE,
            &format!("/v1/conversations/{id}/messages/{seq}"),
            None::<&()>,
        )
        .await
    }

    /// Puts my reaction on a message (replacing any other of mine), or
    /// takes it off (`on` false). Returns the message as it is now.
    pub async fn react(
        &self,
        id: ConversationId,
        seq: Seq,
        emoji: &str,
        on: bool,
    ) -> Result<MessageRecord> {
        let method = if on { Method::PUT } else { Method::DELETE };
        self.call(
            method,
            &format!(
                "/v1/conversations/{id}/messages/{seq}/reactions/{}",
                segment(emoji)
            ),
            &[],
            None::<&()>,
        )
        .await
    }

    /// A history page centred on `seq` (to show a search hit in context).
    pub async fn history_around(
        &self,
        id: ConversationId,
        seq: Seq,
        limit: u32,
    ) -> Result<MessagePage> {
        self.call(
            Method::GET,
            &format!("/v1/conversations/{id}/messages"),
            &[
                ("around_seq", seq.to_string()),
                ("limit", limit.to_string()),
            ],
            None::<&()>,
        )
        .await
    }

    /// Full-text search over the messages I can read, best first.
    pub async fn search_messages(&self, q: &str, opts: &SearchOptions) -> Result<SearchResults> {
        let mut query = vec![("q", q.to_owned())];
        if let Some(c) = opts.conversation_id {
            query.push(("conversation_id", c.to_string()));
        }
        if let Some(s) = opts.sender_id {
            query.push(("sender_id", s.to_string()));
        }
        if let Some(t) = opts.before {
            query.push(("before", t.to_string()));
        }
        if let Some(t) = opts.after {
            query.push(("after", t.to_string()));
        }
        if let Some(l) = opts.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = &opts.cursor {
            query.push(("cursor", c.clone()));
        }
        self.call(Method::GET, "/v1/search/messages", &query, None::<&()>)
            .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_encoded() {
        assert_eq!(super::segment("ok"), "ok");
        assert_eq!(super::segment("👍"), "%F0%9F%91%8D");
        assert_eq!(super::segment("a/b?"), "a%2Fb%3F");
    }
}
