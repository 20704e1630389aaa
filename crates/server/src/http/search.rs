//! `GET /v1/search/messages`: full-text search over what the caller can
//! read (current member, after their `joined_seq`), ranked, with
//! highlighted snippets, paged by an opaque cursor.

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use confab_proto::api::{SearchHit, SearchResults};
use confab_proto::{ConversationId, Millis, UserId};
use confab_store::SearchQuery;
use serde::Deserialize;

use super::ApiQuery;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Largest page.
pub const MAX_LIMIT: u32 = 50;
/// Page size when none is asked for.
const DEFAULT_LIMIT: u32 = 20;
/// Deepest offset a cursor may carry (search pages are for people).
const MAX_OFFSET: u32 = 10_000;

/// Query of the search endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find (1-200 characters, no control characters); `"…"` for
    /// a phrase.
    q: String,
    /// Only in this conversation.
    conversation_id: Option<ConversationId>,
    /// Only from this sender.
    sender_id: Option<UserId>,
    /// Only sent before this time (ms since the epoch).
    before: Option<Millis>,
    /// Only sent after this time (ms since the epoch).
    after: Option<Millis>,
    /// Page size (1-50, default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn encode_cursor(offset: u32) -> String {
    URL_SAFE_NO_PAD.encode(format!("o{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<u32> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    text.strip_prefix('o')?
        .parse()
        .ok()
        .filter(|o| *o <= MAX_OFFSET)
}

/// `GET /v1/search/messages?q=&conversation_id=&sender_id=&before=&after=&limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/search/messages",
    tag = "search",
    security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, description = "Hits, best first", body = SearchResults)),
)]
pub async fn messages(
    State(state): State<AppState>,
    who: AuthUser,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> AppResult<Json<SearchResults>> {
    let chars = p.q.chars().count();
    if p.q.trim().is_empty() || chars > MAX_QUERY_CHARS {
        return Err(AppError::bad_request("q must be 1-200 characters"));
    }
    if p.q.chars().any(char::is_control) {
        return Err(AppError::bad_request(
            "q must not contain control characters (NUL, newlines, …)",
        ));
    }
    let offset = match &p.cursor {
        Some(c) => decode_cursor(c).ok_or_else(|| AppError::bad_request("unknown cursor"))?,
        None => 0,
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let query = SearchQuery {
        q: p.q,
        conversation_id: p.conversation_id,
        sender_id: p.sender_id,
        before: p.before,
        after: p.after,
        limit,
        offset,
    };
    let (hits, more) = state.store.search_messages(who.user_id, &query).await?;
    let next = offset + hits.len() as u32;
    let next_cursor = (more && next <= MAX_OFFSET).then(|| encode_cursor(next));
    Ok(Json(SearchResults {
        hits: hits
            .into_iter()
            .map(|h| SearchHit {
                message: h.message,
                snippet: h.snippet,
            })
            .collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        assert_eq!(decode_cursor(&encode_cursor(40)), Some(40));
        assert_eq!(decode_cursor("nonsense!"), None);
        assert_eq!(decode_cursor(&encode_cursor(MAX_OFFSET + 1)), None);
    }
}
