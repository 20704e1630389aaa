//! Store errors.

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (username, direct pair, …).
    #[error("already exists")]
    Conflict,
    /// The database cannot be reached or refused the operation; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or a damaged database).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Store result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
