//! Row mapping on PostgreSQL: the shared mapping of [`crate::rows`].

pub(crate) use crate::rows::*;

/// [`USER_COLUMNS`] qualified with a table alias (`u.id, u.username, …`).
pub(crate) fn user_columns(alias: &str) -> String {
    USER_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
