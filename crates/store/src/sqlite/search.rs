//! Full-text search on SQLite: the FTS5 table `message_index` holds the
//! tokens of text messages and media captions (space-joined, cut by
//! [`crate::search::text`]), keyed by `conversation_id * 2^32 + seq`, and
//! written by the background indexer from `search_queue` (migration 0005).

use super::dialect::{self, Builder, Pool};
use confab_proto::UserId;

use crate::search::{plan_round, text, IndexBackend, QueueRow, Queued, ROUND};
use crate::types::*;
use crate::Result;

#[path = "../shared/search.rs"]
mod shared;

pub(crate) use shared::backlog;

/// The index key of a message.
fn key(conversation_id: i64, seq: i64) -> i64 {
    (conversation_id << 32) + seq
}

pub(crate) async fn search(
    db: &Pool,
    user: UserId,
    query: &SearchQuery,
) -> Result<(Vec<SearchHit>, bool)> {
    let Some(plan) = text::plan(&query.q) else {
        return Ok((Vec::new(), false));
    };
    let mut q = Builder::new(format!(
        "SELECT {}
         FROM message_index
         JOIN messages m ON m.conversation_id = message_index.rowid >> 32
                        AND m.seq = message_index.rowid & 4294967295
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = ",
        super::rows::message_columns("m")
    ));
    q.push_bind(user);
    q.push(" WHERE message_index MATCH ");
    q.push_bind(plan.fts5());
    q.push(" AND m.seq > mb.joined_seq AND m.deleted_at IS NULL");
    shared::finish(db, q, &plan, query, "bm25(message_index)").await
}

/// Empties the index and queues every searchable message again.
pub(crate) async fn rebuild(db: &Pool) -> Result<()> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::query("INSERT INTO message_index (message_index) VALUES ('delete-all')")
        .execute(&mut *tx)
        .await?;
    shared::requeue_all(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The indexer's SQL on SQLite: the round is read in one job on the
/// writer thread, cut into words on a blocking thread, and written in a
/// second job, so segmentation never holds the writer the committer needs. There is one indexer per
/// database file, so keys up to the highest one read are all handled.
#[derive(Debug, Clone)]
pub(crate) struct SqliteIndex {
    pub reader: Pool,
    pub writer: super::writer::Writer,
}

#[async_trait::async_trait]
impl IndexBackend for SqliteIndex {
    async fn queue_bounds(&self) -> Result<Option<(i64, i64)>> {
        let (lo, hi): (Option<i64>, Option<i64>) =
            dialect::query_as("SELECT min(id), max(id) FROM search_queue")
                .fetch_one(&self.reader)
                .await?;
        Ok(lo.zip(hi))
    }

    async fn index_round(&self) -> Result<usize> {
        // Read on the writer thread too: the rows go straight to the
        // round's plan, not through a pooled connection's owned-row copies
        // (this read is as large as the round).
        let rows: Vec<QueueRow> = self
            .writer
            .background_transaction(|t| {
                let mut st = t.prepare_cached(
                    "SELECT q.id, q.conversation_id, q.seq, m.kind, m.body, m.deleted_at
                     FROM search_queue q
                     LEFT JOIN messages m ON m.conversation_id = q.conversation_id AND m.seq = q.seq
                     ORDER BY q.id LIMIT ?",
                )?;
                let rows = st
                    .query_map([ROUND as i64], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<QueueRow>>>()?;
                Ok(rows)
            })
            .await?;
        let n = rows.len();
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(0);
        };
        let queued = rows.into_iter().map(Queued::from_row).collect();
        let plan = tokio::task::spawn_blocking(move || plan_round(queued))
            .await
            .map_err(|e| crate::StoreError::Unavailable(format!("indexing task failed: {e}")))?;
        self.writer
            .background_transaction(move |t| {
                for ((c, s), tokens) in &plan.entries {
                    // A new message has no entry yet: look before deleting
                    // (a plain rowid lookup), since a contentless index
                    // records a tombstone for every delete it is asked for.
                    let indexed = t
                        .prepare_cached("SELECT 1 FROM message_index_docsize WHERE id = ?")?
                        .exists([key(*c, *s)])?;
                    if indexed {
                        t.prepare_cached("DELETE FROM message_index WHERE rowid = ?")?
                            .execute([key(*c, *s)])?;
                    }
                    if let Some(tokens) = tokens {
                        t.prepare_cached(
                            "INSERT INTO message_index (rowid, tokens) VALUES (?, ?)",
                        )?
                        .execute((key(*c, *s), tokens.join(" ")))?;
                    }
                }
                t.prepare_cached("DELETE FROM search_queue WHERE id <= ?")?
                    .execute([last])?;
                Ok(())
            })
            .await?;
        Ok(n)
    }
}
