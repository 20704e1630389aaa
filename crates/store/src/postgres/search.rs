//! Full-text search on PostgreSQL: `message_search` holds a `tsvector` per
//! text message and media caption, made from the tokens of
//! [`crate::search::text`] verbatim (no parser or dictionary in between, so
//! both backends index and match alike), under a GIN index, ranked by
//! `ts_rank`; written by the background indexer from `search_queue`
//! (migration 0005).

use confab_proto::UserId;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::search::{plan_round, text, IndexBackend, QueueRow, Queued, ROUND};
use crate::types::*;
use crate::Result;

#[path = "../shared/search.rs"]
mod shared;

pub(crate) use shared::backlog;

/// Advisory lock key of the indexer: one node indexes at a time, so two
/// rounds never write the same key out of order.
const INDEXER_LOCK: i64 = 0x636f_6e66_6162_0001;

pub(crate) async fn search(
    db: &PgPool,
    user: UserId,
    query: &SearchQuery,
) -> Result<(Vec<SearchHit>, bool)> {
    let Some(plan) = text::plan(&query.q) else {
        return Ok((Vec::new(), false));
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {}, ts_rank(s.tokens, tq) AS rank
         FROM message_search s
         JOIN messages m ON m.conversation_id = s.conversation_id AND m.seq = s.seq
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ",
        super::rows::message_columns("m")
    ));
    q.push_bind(user);
    q.push(", CAST(");
    q.push_bind(plan.tsquery());
    q.push(
        " AS tsquery) tq
         WHERE s.tokens @@ tq AND m.deleted_at IS NULL AND m.seq > mb.joined_seq",
    );
    shared::finish(db, q, &plan, query, "rank DESC").await
}

/// Empties the index and queues every searchable message again.
pub(crate) async fn rebuild(db: &PgPool) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INDEXER_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM message_search")
        .execute(&mut *tx)
        .await?;
    shared::requeue_all(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The indexer's SQL on PostgreSQL: a round is one transaction under an
/// advisory lock (another node's indexer skips the round), reading the
/// queue and the messages' current state, writing the index entries and
/// deleting exactly the keys it read (keys committed meanwhile by other
/// transactions wait for the next round).
#[derive(Debug, Clone)]
pub(crate) struct PostgresIndex {
    pub pool: PgPool,
}

#[async_trait::async_trait]
impl IndexBackend for PostgresIndex {
    async fn queue_bounds(&self) -> Result<Option<(i64, i64)>> {
        let (lo, hi): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(id), max(id) FROM search_queue")
                .fetch_one(&self.pool)
                .await?;
        Ok(lo.zip(hi))
    }

    async fn index_round(&self) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(INDEXER_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows: Vec<QueueRow> = sqlx::query_as(
            "SELECT q.id, q.conversation_id, q.seq, m.kind, m.body, m.deleted_at
                 FROM search_queue q
                 LEFT JOIN messages m ON m.conversation_id = q.conversation_id AND m.seq = q.seq
                 ORDER BY q.id LIMIT $1",
        )
        .bind(ROUND as i64)
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        if n == 0 {
            return Ok(0);
        }
        let queued = rows.into_iter().map(Queued::from_row).collect();
        let plan = tokio::task::spawn_blocking(move || plan_round(queued))
            .await
            .map_err(|e| crate::StoreError::Unavailable(format!("indexing task failed: {e}")))?;
        let (mut convs, mut seqs) = (Vec::new(), Vec::new());
        let (mut put_convs, mut put_seqs, mut put_tokens) = (Vec::new(), Vec::new(), Vec::new());
        for ((c, s), tokens) in &plan.entries {
            convs.push(*c);
            seqs.push(*s);
            if let Some(tokens) = tokens {
                put_convs.push(*c);
                put_seqs.push(*s);
                put_tokens.push(text::tsvector(tokens));
            }
        }
        sqlx::query(
            "DELETE FROM message_search s USING UNNEST($1::BIGINT[], $2::BIGINT[]) AS k(c, q)
             WHERE s.conversation_id = k.c AND s.seq = k.q",
        )
        .bind(&convs)
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO message_search (conversation_id, seq, tokens)
             SELECT c, q, t::tsvector FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[]) AS k(c, q, t)",
        )
        .bind(&put_convs)
        .bind(&put_seqs)
        .bind(&put_tokens)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM search_queue WHERE id = ANY($1)")
            .bind(&plan.queue_ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
