//! The PostgreSQL backend, for running several Confab nodes on one shared
//! database.
//!
//! Same schema and semantics as the SQLite backend (one behavioural suite,
//! `tests/store_suite.rs`, runs against both); what differs is how writes
//! stay correct when they are not serialised by a single connection:
//!
//! - [`Store::commit_batch`] (`commit.rs`) first locks the rows of the
//!   conversations its batch touches, in id order, so that membership,
//!   idempotency and seq reservation of two nodes' batches for the same
//!   conversation never interleave; seqs stay gapless per conversation.
//! - `get_or_create_direct` inserts with `ON CONFLICT (direct_key) DO
//!   NOTHING` and reads back the winner's row.
//! - Friend, block and refresh-token operations that read before they write
//!   lock the rows they decide on (`social.rs`, `accounts.rs`).
//!
//! Every statement is built at run time (no `query!` macros): building the
//! crate needs no database. Migrations (`migrations/postgres`) are embedded
//! and run by [`PostgresStore::open`]. A commit returns only once the server
//! has made it durable (PostgreSQL's default `synchronous_commit=on`).
//!
//! The code this backend shares with the SQLite one is written once in
//! `src/shared/` and compiled here as this backend's `accounts`, `oidc`,
//! `social`, `e2ee`, `media` and `notice` modules (and inside
//! `conversations` and `search`), over this backend's `dialect` module: the
//! pool and row types and the few SQL points where the dialects differ. The
//! `Store` methods that only delegate are written once in `store_impl!`.

#[path = "../shared/accounts.rs"]
mod accounts;
mod changes;
mod commit;
mod conversations;
mod dialect;
#[path = "../shared/e2ee.rs"]
mod e2ee;
mod groups;
#[path = "../shared/media.rs"]
mod media;
#[path = "../shared/notice.rs"]
mod notice;
#[path = "../shared/oidc.rs"]
mod oidc;
mod rows;
mod search;
#[path = "../shared/social.rs"]
mod social;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use confab_proto::api::{Conversation, FriendRequest, Member, User};
use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, MessageRecord, Seq, UserId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::types::*;
use crate::{Result, Store, StoreError};

/// Connections per pool (per node).
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a free connection before it reports the
/// database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Confab's shared store: a pool of connections to one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    indexer: std::sync::Arc<crate::search::Indexer>,
    index: search::PostgresIndex,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with a pool
    /// of 16 connections and a 10 s acquire timeout, and runs migrations.
    /// Several nodes may open the same database at once (the migrator takes
    /// an advisory lock).
    pub async fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::open_with(url, MAX_CONNECTIONS, ACQUIRE_TIMEOUT).await
    }

    /// [`PostgresStore::open`] with another pool size and acquire timeout.
    /// While the database is unreachable, every call waits up to
    /// `acquire_timeout` for a connection and then fails with
    /// [`StoreError::Unavailable`].
    pub async fn open_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<PostgresStore> {
        // The locking in this backend is written for READ COMMITTED (a fresh
        // snapshot per statement), whatever the server's default; and a node
        // that stops talking in the middle of a transaction must not hold
        // conversation locks for long.
        let connect = PgConnectOptions::from_str(url)?.options([
            ("default_transaction_isolation", "read\\ committed"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        tokio::task::spawn_blocking(crate::search::text::warm_up)
            .await
            .map_err(|e| StoreError::Unavailable(format!("loading the dictionary failed: {e}")))?;
        let index = search::PostgresIndex { pool: pool.clone() };
        let indexer = std::sync::Arc::new(crate::search::Indexer::start(index.clone()));
        Ok(PostgresStore {
            pool,
            indexer,
            index,
        })
    }

    /// Closes the pool, waiting for calls in flight.
    pub async fn close(&self) {
        self.indexer.stop();
        self.pool.close().await;
    }
}

store_impl!(PostgresStore, read: pool, write: pool, {
    async fn commit_batch(&self, ops: &[WriteOp], rules: CommitRules) -> Result<Vec<WriteOutcome>> {
        let out = commit::commit_batch(&self.pool, ops, rules).await?;
        self.indexer.wake();
        Ok(out)
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_use_read_committed_and_bound_idle_transactions() {
        let Some(pg) = confab_testkit::Postgres::start_or_skip().await else {
            return;
        };
        // Even where the server defaults to SERIALIZABLE.
        let url = pg.url();
        let admin = PgPool::connect(&url).await.expect("connect");
        sqlx::query("ALTER DATABASE confab SET default_transaction_isolation = 'serializable'")
            .execute(&admin)
            .await
            .expect("alter");
        admin.close().await;
        let store = PostgresStore::open(&url).await.expect("open");
        let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&store.pool)
            .await
            .expect("show");
        assert_eq!(isolation, "read committed");
        let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&store.pool)
            .await
            .expect("show");
        assert_eq!(idle, "1min");
        store.ping().await.expect("ping");
        store.close().await;
    }
}
