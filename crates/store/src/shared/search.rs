//! The search reads both backends share: the filters, order and page of a
//! search and the mapping of its rows to hits, the backlog count, and the
//! re-queueing of a rebuild. Compiled once as `sqlite::search::shared` and
//! once as `postgres::search::shared`; what matches and ranks (FTS5 or a
//! `tsvector`) stays in each backend's `search.rs`.

use super::super::dialect::{self, Conn, Pool};
use super::super::rows;
use crate::search::{hit, text};
use crate::types::*;
use crate::Result;

/// Adds the optional filters of `query`, the order (`rank` first: the
/// backend's relevance expression, then newest first) and the page, runs
/// the search and maps its rows: at most `limit` hits, and whether there is
/// more.
pub(crate) async fn finish(
    db: &Pool,
    mut q: dialect::Builder<'_>,
    plan: &text::SearchPlan,
    query: &SearchQuery,
    rank: &str,
) -> Result<(Vec<SearchHit>, bool)> {
    let limit = i64::from(query.limit.max(1));
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
    q.push(format!(
        " ORDER BY {rank}, m.ts DESC, m.conversation_id, m.seq DESC LIMIT "
    ));
    q.push_bind(limit + 1);
    q.push(" OFFSET ").push_bind(i64::from(query.offset));
    let found = q.build().fetch_all(db).await?;
    let has_more = found.len() as i64 > limit;
    let hits = found
        .iter()
        .take(limit as usize)
        .map(|row| rows::message(row).map(|m| hit(plan, m)))
        .collect::<Result<Vec<_>>>()?;
    Ok((hits, has_more))
}

/// Keys committed but not indexed yet.
pub(crate) async fn backlog(db: &Pool) -> Result<u64> {
    let n: i64 = dialect::query_scalar("SELECT count(*) FROM search_queue")
        .fetch_one(db)
        .await?;
    Ok(n.max(0) as u64)
}

/// Queues every searchable message again (a rebuild, after the backend has
/// emptied its index in the same transaction).
pub(crate) async fn requeue_all(tx: &mut Conn) -> Result<()> {
    dialect::query(
        "INSERT INTO search_queue (conversation_id, seq)
         SELECT conversation_id, seq FROM messages
         WHERE kind IN ('text', 'image', 'voice', 'file') AND deleted_at IS NULL
         ORDER BY conversation_id, seq",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
