//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so a
//! commit is on disk before it returns. The committer's batches and the
//! search indexer's rounds run on a dedicated writer thread that owns a
//! rusqlite connection (`writer.rs`, `batch.rs`): one job, one
//! transaction, one fsync per batch, no async round trip per statement.
//! The other writes (accounts, friends, media records, creating
//! conversations) go through one more rusqlite connection; every write
//! transaction begins `IMMEDIATE`, so the two writers queue on SQLite's
//! lock instead of failing. Reads use a small pool of read-only rusqlite
//! connections concurrently with the writers (`lite.rs`: statements run
//! on Tokio's blocking threads). sqlx is not used for SQLite at all.
//!
//! The code this backend shares with the PostgreSQL one is written once in
//! `src/shared/` and compiled here as this backend's `accounts`, `oidc`,
//! `social`, `e2ee`, `media` and `notice` modules (and inside
//! `conversations` and `search`), over this backend's `dialect` module: the
//! pool and row types and the few SQL points where the dialects differ. The
//! `Store` methods that only delegate are written once in `store_impl!`.

#[path = "../shared/accounts.rs"]
mod accounts;
mod batch;
mod batch_changes;
mod conversations;
mod dialect;
#[path = "../shared/e2ee.rs"]
mod e2ee;
mod lite;
#[path = "../shared/media.rs"]
mod media;
mod migrate;
#[path = "../shared/notice.rs"]
mod notice;
#[path = "../shared/oidc.rs"]
mod oidc;
mod rows;
pub(crate) mod search;
#[path = "../shared/social.rs"]
mod social;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use confab_proto::api::{Conversation, FriendRequest, Member, User};
use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, MessageRecord, Seq, UserId};
use lite::{Access, Pool};

use crate::types::*;
use crate::{Result, Store, StoreError};

/// How often the background task checkpoints the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL frames (pages) from which a checkpoint pass is finished on the
/// writer thread so that the WAL starts over (4 MB of 4 KB pages, SQLite's
/// own automatic checkpoint size); see [`writer::Writer::checkpoint`].
const RESTART_FRAMES: i64 = 1000;

/// Confab's embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Pool,
    reader: Pool,
    checkpointer: Arc<Checkpointer>,
    indexer: Arc<crate::search::Indexer>,
    index: search::SqliteIndex,
    /// The writer thread: sends and cursor moves, indexing rounds.
    rw: writer::Writer,
}

/// Copies the WAL back into the database file off the commit path. SQLite's
/// automatic checkpoint would run inside a commit every 1000 pages and stall
/// the group committer for the length of a checkpoint and its fsync.
#[derive(Debug)]
struct Checkpointer {
    pool: Pool,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(pool: Pool, writer: writer::Writer) -> Checkpointer {
        let p = pool.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            loop {
                tick.tick().await;
                let wal: Result<(i64, i64, i64)> =
                    dialect::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&p)
                        .await
                        .map_err(StoreError::from);
                match wal {
                    // The writer appended while this pass copied: let the
                    // writer copy the rest itself so the WAL starts over.
                    Ok((_, frames, _)) if frames >= RESTART_FRAMES => {
                        let started = std::time::Instant::now();
                        match writer.checkpoint().await {
                            // What it cost: commits wait while the writer
                            // copies (about 1 ms at 5,000 msgs/s, 10-80 ms
                            // at saturation, docs/operations.md).
                            Ok((wal, copied)) => tracing::debug!(
                                frames,
                                wal,
                                copied,
                                took_us = started.elapsed().as_micros() as u64,
                                "wal checkpoint finished on the writer"
                            ),
                            Err(e) => {
                                tracing::warn!(error = %e, "wal checkpoint on the writer failed")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
                }
            }
        });
        Checkpointer { pool, task }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let writer = Pool::open(path, Access::Write, 1).await?;
        writer.run(migrate::run).await?;
        let checkpoint_pool = Pool::open(path, Access::Write, 1).await?;
        let reader = Pool::open(path, Access::Read, 4).await?;
        tokio::task::spawn_blocking(crate::search::text::warm_up)
            .await
            .map_err(|e| StoreError::Unavailable(format!("loading the dictionary failed: {e}")))?;
        let rw = writer::Writer::start(path)?;
        let checkpointer = Arc::new(Checkpointer::start(checkpoint_pool, rw.clone()));
        let index = search::SqliteIndex {
            reader: reader.clone(),
            writer: rw.clone(),
        };
        let indexer = Arc::new(crate::search::Indexer::start(index.clone()));
        Ok(SqliteStore {
            writer,
            reader,
            checkpointer,
            indexer,
            index,
            rw,
        })
    }

    /// Closes both pools, finishing outstanding work.
    pub async fn close(&self) {
        self.checkpointer.task.abort();
        self.indexer.stop();
        self.reader.close();
        self.writer.close();
        // A last full checkpoint so the database file stands on its own.
        let _ = dialect::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.checkpointer.pool)
            .await;
        self.checkpointer.pool.close();
    }
}

store_impl!(SqliteStore, read: reader, write: writer, {
    async fn commit_batch(&self, ops: &[WriteOp], rules: CommitRules) -> Result<Vec<WriteOutcome>> {
        // The whole batch runs on the writer thread: one job, one
        // transaction, one fsync, one reply.
        let ops = ops.to_vec();
        let out = self
            .rw
            .transaction(move |t| batch::commit_batch(t, &ops, rules))
            .await?;
        self.indexer.wake();
        Ok(out)
    }
});
