//! The SQLite schema migrations (`migrations/sqlite/`), run with rusqlite.
//!
//! Each one runs in its own transaction and is recorded in
//! `_sqlx_migrations` exactly as sqlx's migrator records it (version,
//! description, SHA-384 checksum of the file, nanoseconds taken), the table
//! databases made before this module already have: those upgrade in place,
//! and an applied migration whose file has changed since is refused, as is
//! a database migrated by a newer Confab.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha384};

use crate::{Result, StoreError};

/// One migration file.
struct Migration {
    version: i64,
    /// The file name after the version, without `.sql`, `_` read as a space.
    description: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal $description:literal $file:literal),+ $(,)?) => {
        &[$(Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../migrations/sqlite/", $file)),
        }),+]
    };
}

/// Every migration, in order; a test checks the list against the folder.
const MIGRATIONS: &[Migration] = migrations![
    1 "init" "0001_init.sql",
    2 "social" "0002_social.sql",
    3 "media" "0003_media.sql",
    4 "messages" "0004_messages.sql",
    5 "search queue" "0005_search_queue.sql",
    6 "oidc" "0006_oidc.sql",
    7 "e2ee" "0007_e2ee.sql",
    8 "contentless index" "0008_contentless_index.sql",
    9 "idempotency by conversation" "0009_idempotency_by_conversation.sql",
    10 "reindex han pairs" "0010_reindex_han_pairs.sql",
];

/// Applies the migrations `conn`'s database does not have yet.
pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )?;
    let unknown: Option<i64> = conn
        .query_row(
            "SELECT max(version) FROM _sqlx_migrations WHERE version > ?",
            [MIGRATIONS.last().map_or(0, |m| m.version)],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(v) = unknown {
        return Err(failed(format!(
            "the database has migration {v}, which this Confab does not know: it was made by a newer version"
        )));
    }
    for m in MIGRATIONS {
        let checksum = Sha384::digest(m.sql.as_bytes()).to_vec();
        let applied: Option<(bool, Vec<u8>)> = conn
            .query_row(
                "SELECT success, checksum FROM _sqlx_migrations WHERE version = ?",
                [m.version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match applied {
            Some((false, _)) => {
                return Err(failed(format!(
                    "migration {} was left half done; restore a backup",
                    m.version
                )))
            }
            Some((true, stored)) if stored != checksum => {
                return Err(failed(format!(
                    "migration {} was applied from a different file",
                    m.version
                )))
            }
            Some(_) => continue,
            None => {}
        }
        let started = Instant::now();
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)
            .map_err(|e| failed(format!("migration {}: {e}", m.version)))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?, ?, TRUE, ?, ?)",
            (
                m.version,
                m.description,
                &checksum,
                started.elapsed().as_nanos() as i64,
            ),
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn failed(why: String) -> StoreError {
    StoreError::Unavailable(format!("migration failed: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list names every file in the folder, with sqlx's version and
    /// description for it.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the migrations folder")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "{files:?}");
        for (file, m) in files.iter().zip(MIGRATIONS) {
            let (version, rest) = file.split_once('_').expect("NNNN_name.sql");
            assert_eq!(version.parse::<i64>().ok(), Some(m.version), "{file}");
            assert_eq!(
                rest.trim_end_matches(".sql").replace('_', " "),
                m.description
            );
            let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("readable");
            assert_eq!(text, m.sql, "{file}");
        }
    }

    /// A fresh database gets every migration once; running again changes
    /// nothing; a changed file and a newer database are refused.
    #[test]
    fn migrations_apply_once_and_refuse_what_they_do_not_know() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        run(&mut conn).expect("first run");
        run(&mut conn).expect("second run");
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM _sqlx_migrations WHERE success",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, MIGRATIONS.len() as i64);
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 3",
            [],
        )
        .expect("tamper");
        assert!(
            run(&mut conn).is_err(),
            "a changed migration must be refused"
        );
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = ? WHERE version = 3",
            [Sha384::digest(MIGRATIONS[2].sql.as_bytes()).to_vec()],
        )
        .expect("restore");
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (999, 'future', TRUE, x'00', 0)",
            [],
        )
        .expect("a future migration");
        assert!(run(&mut conn).is_err(), "a newer database must be refused");
    }
}
