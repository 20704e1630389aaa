//! Full-text search with FTS5: `message_search` holds the text of text
//! messages and media captions, keyed by `conversation_id * 2^32 + seq`
//! and kept in sync by triggers on `messages` (migration 0004).

use confab_proto::UserId;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::changes::qualified;
use super::rows;
use crate::types::*;
use crate::Result;

/// The FTS5 query for a web-search style query: every word or phrase
/// quoted (so nothing is read as FTS5 syntax), ANDed, exclusions as
/// `NOT`. `None` when nothing positive is asked for.
fn fts_query(q: &str) -> Option<String> {
    let terms = search_terms(q);
    let quote = |t: &str| format!("\"{}\"", t.replace('"', "\"\""));
    let positive: Vec<String> = terms
        .iter()
        .filter(|(_, neg)| !neg)
        .map(|(t, _)| quote(t))
        .collect();
    if positive.is_empty() {
        return None;
    }
    let mut out = positive.join(" AND ");
    for (t, _) in terms.iter().filter(|(_, neg)| *neg) {
        out = format!("({out}) NOT {}", quote(t));
    }
    Some(out)
}

pub(crate) async fn search(
    db: &SqlitePool,
    user: UserId,
    query: &SearchQuery,
) -> Result<(Vec<SearchHit>, bool)> {
    let Some(fts) = fts_query(&query.q) else {
        return Ok((Vec::new(), false));
    };
    let limit = i64::from(query.limit.max(1));
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "SELECT {}, snippet(message_search, 0, char(2), char(3), '…', 16) AS snippet
         FROM message_search
         JOIN messages m ON m.conversation_id = message_search.rowid >> 32
                        AND m.seq = message_search.rowid & 4294967295
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ",
        qualified("m")
    ));
    q.push_bind(user);
    q.push(" WHERE message_search MATCH ");
    q.push_bind(fts);
    q.push(" AND m.seq > mb.joined_seq AND m.deleted_at IS NULL");
    if let Some(c) = query.conversation_id {
        q.push(" AND m.conversation_id = ").push_bind(c);
    }
    if let Some(s) = query.sender_id {
        q.push(" AND m.sender_id = ").push_bind(s);
    }
    if let Some(t) = query.before {
        q.push(" AND m.ts < ").push_bind(t);
    }
    if let Some(t) = query.after {
        q.push(" AND m.ts > ").push_bind(t);
    }
    q.push(" ORDER BY bm25(message_search), m.ts DESC, m.conversation_id, m.seq DESC LIMIT ");
    q.push_bind(limit + 1);
    q.push(" OFFSET ").push_bind(i64::from(query.offset));
    let found = q.build().fetch_all(db).await?;
    let has_more = found.len() as i64 > limit;
    let hits = found
        .iter()
        .take(limit as usize)
        .map(|row| {
            let raw: String = row.try_get("snippet")?;
            Ok(SearchHit {
                message: rows::message(row)?,
                snippet: render_snippet(&raw),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((hits, has_more))
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn queries_are_quoted() {
        assert_eq!(
            fts_query("hello world").as_deref(),
            Some(r#""hello" AND "world""#)
        );
        assert_eq!(
            fts_query(r#""big cat" -dog"#).as_deref(),
            Some(r#"("big cat") NOT "dog""#)
        );
        assert_eq!(fts_query("a\"b OR").as_deref(), Some(r#""a""b" AND "OR""#));
        assert_eq!(fts_query("-only"), None);
        assert_eq!(fts_query("  ...  "), None);
    }
}
