//! Full-text search with PostgreSQL's own machinery: the generated column
//! `messages.search_text` (text of text messages and media captions, NULL
//! once deleted) under a GIN index on `to_tsvector('simple', search_text)`,
//! queried with `websearch_to_tsquery`, ranked by `ts_rank`, snippets by
//! `ts_headline` (migration 0004).

use confab_proto::UserId;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::changes::qualified;
use super::rows;
use crate::types::*;
use crate::Result;

/// The query handed to `websearch_to_tsquery`: the same terms SQLite
/// searches for, so both backends read a query alike. `None` when nothing
/// positive is asked for.
fn web_query(q: &str) -> Option<String> {
    let terms = search_terms(q);
    if !terms.iter().any(|(_, neg)| !neg) {
        return None;
    }
    let quoted: Vec<String> = terms
        .iter()
        .map(|(t, neg)| {
            let t = t.replace('"', " ");
            if *neg {
                format!("-\"{t}\"")
            } else {
                format!("\"{t}\"")
            }
        })
        .collect();
    Some(quoted.join(" "))
}

pub(crate) async fn search(
    db: &PgPool,
    user: UserId,
    query: &SearchQuery,
) -> Result<(Vec<SearchHit>, bool)> {
    let Some(web) = web_query(&query.q) else {
        return Ok((Vec::new(), false));
    };
    let limit = i64::from(query.limit.max(1));
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {},
                ts_headline('simple', m.search_text, tq,
                    'StartSel=' || chr(2) || ', StopSel=' || chr(3)
                    || ', MaxWords=24, MinWords=8') AS snippet,
                ts_rank(to_tsvector('simple', m.search_text), tq) AS rank
         FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ",
        qualified("m")
    ));
    q.push_bind(user);
    q.push(", websearch_to_tsquery('simple', ");
    q.push_bind(web);
    q.push(
        ") tq
         WHERE m.search_text IS NOT NULL AND to_tsvector('simple', m.search_text) @@ tq
           AND m.seq > mb.joined_seq",
    );
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
    q.push(" ORDER BY rank DESC, m.ts DESC, m.conversation_id, m.seq DESC LIMIT ");
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
