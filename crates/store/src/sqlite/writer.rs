//! The SQLite write path without hops: one dedicated OS thread owns a
//! rusqlite connection and runs each job handed to it (a whole commit
//! batch, an indexing round) as plain synchronous calls on cached prepared
//! statements. The committer's task awaits one reply per batch, instead of
//! one round trip to sqlx's worker thread per statement.
//!
//! Jobs arrive on a bounded queue ([`QUEUE`]); a sender waits when it is
//! full. The thread ends when the last [`Writer`] handle is dropped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Jobs waiting for the writer thread at most.
const QUEUE: usize = 64;

/// Prepared statements kept per connection (a handful of SQL texts per
/// list size, see `batch::PIECES`).
const STATEMENT_CACHE: usize = 128;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

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
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the database file (already made and migrated) for writing and
    /// starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Writer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = memory;
             PRAGMA cache_size = -32000;
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` on the writer thread inside one `BEGIN IMMEDIATE` …
    /// `COMMIT` (rolled back when `f` fails) and returns its result.
    pub(crate) async fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let run = || -> Result<T> {
                let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&t)?;
                t.commit()?;
                Ok(out)
            };
            let _ = tx.send(run());
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }
}
