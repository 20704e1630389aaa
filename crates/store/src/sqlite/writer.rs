//! The SQLite write path without hops: one dedicated OS thread owns a
//! rusqlite connection and runs each job handed to it (a whole commit
//! batch, an indexing round) as plain synchronous calls on cached prepared
//! statements. The committer's task awaits one reply per batch, instead of
//! one round trip to a connection's thread per statement.
//!
//! Jobs arrive on a bounded queue ([`QUEUE`]); a sender waits when it is
//! full. Commits that clients wait for go before background work
//! (indexing rounds) queued beside them, and background transactions do
//! not fsync ([`Writer::background_transaction`]). The thread ends when
//! the last [`Writer`] handle is dropped.

use std::collections::VecDeque;
use std::path::Path;

use rusqlite::Connection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Jobs waiting for the writer thread at most.
const QUEUE: usize = 64;

/// Prepared statements kept per connection (a handful of SQL texts per
/// list size, see `batch::PIECES`).
const STATEMENT_CACHE: usize = 128;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A job and whether a client waits for it.
struct Queued {
    background: bool,
    job: Job,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation
                    && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
            {
                StoreError::Conflict
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A cheap handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Queued>,
}

impl Writer {
    /// Opens the database file (already made and migrated) for writing and
    /// starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Writer> {
        // The same settings as every other connection (WAL, `synchronous =
        // FULL`, no automatic checkpoint, the WAL size limit).
        let conn = super::lite::open(path, super::lite::Access::Write)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, mut rx) = mpsc::channel::<Queued>(QUEUE);
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                let mut later: VecDeque<Job> = VecDeque::new();
                while let Some(job) = next_job(&mut rx, &mut later) {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` on the writer thread inside one `BEGIN IMMEDIATE` …
    /// `COMMIT` (rolled back when `f` fails, fsynced when it commits) and
    /// returns its result.
    pub(crate) async fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.run(false, f).await
    }

    /// Like [`Writer::transaction`], for work no client waits for (an
    /// indexing round): it runs after the commits queued with it, and it
    /// does not fsync (`synchronous = NORMAL` for its commit). It stays
    /// atomic; the next fsynced commit makes it durable (the WAL is
    /// written in order), and a crash before that loses it whole, which
    /// for the search index only means its queue rows are indexed again.
    pub(crate) async fn background_transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.run(true, f).await
    }

    /// Checkpoints the WAL on the writer's own connection, between two
    /// jobs (after the commits waiting beside it), and returns the WAL's
    /// frames and how many of them are now in the database file.
    ///
    /// The background checkpointer's connection copies most of the WAL,
    /// but under steady load the writer appends frames while it copies, so
    /// it never catches up and SQLite never starts the WAL over: the file
    /// grows without bound (hundreds of MB in seconds at saturation) and
    /// every commit's fdatasync also writes the grown file's inode. Run
    /// here, nothing is appended meanwhile; when every frame is copied
    /// (and no reader still needs one) the next commit starts the WAL
    /// from its beginning, overwriting blocks the file already has. The
    /// copy is short: only what was written since the background pass.
    pub(crate) async fn checkpoint(&self) -> Result<(i64, i64)> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let done = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(StoreError::from);
            let _ = tx.send(done);
        });
        self.jobs
            .send(Queued {
                background: true,
                job,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }

    async fn run<T, F>(&self, background: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let run = || -> Result<T> {
                if background {
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                }
                let done = (|| {
                    let t =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let out = f(&t)?;
                    t.commit()?;
                    Ok(out)
                })();
                if background {
                    conn.pragma_update(None, "synchronous", "FULL")?;
                }
                done
            };
            let _ = tx.send(run());
        });
        self.jobs
            .send(Queued { background, job })
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }
}

/// The next job to run: a commit that is waiting goes before background
/// work queued earlier; background jobs run in their order when no commit
/// waits. `None` once every handle is gone and nothing is left.
fn next_job(rx: &mut mpsc::Receiver<Queued>, later: &mut VecDeque<Job>) -> Option<Job> {
    loop {
        match rx.try_recv() {
            Ok(Queued {
                background: false,
                job,
            }) => return Some(job),
            Ok(Queued { job, .. }) => later.push_back(job),
            Err(TryRecvError::Empty) => {
                if let Some(job) = later.pop_front() {
                    return Some(job);
                }
                match rx.blocking_recv()? {
                    Queued {
                        background: false,
                        job,
                    } => return Some(job),
                    Queued { job, .. } => later.push_back(job),
                }
            }
            Err(TryRecvError::Disconnected) => return later.pop_front(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_waiting_commit_goes_before_queued_background_work() {
        let (tx, mut rx) = mpsc::channel::<Queued>(8);
        let ran = Arc::new(Mutex::new(Vec::new()));
        let job = |name: &'static str| -> Job {
            let ran = ran.clone();
            Box::new(move |_: &mut Connection| {
                if let Ok(mut r) = ran.lock() {
                    r.push(name);
                }
            })
        };
        for (background, name) in [(true, "index 1"), (true, "index 2"), (false, "commit")] {
            assert!(tx
                .try_send(Queued {
                    background,
                    job: job(name)
                })
                .is_ok());
        }
        drop(tx);
        let mut conn = Connection::open_in_memory().expect("sqlite");
        let mut later = VecDeque::new();
        while let Some(job) = next_job(&mut rx, &mut later) {
            job(&mut conn);
        }
        let ran = ran.lock().expect("lock").clone();
        assert_eq!(ran, ["commit", "index 1", "index 2"]);
    }
}
