//! Row mapping on SQLite: the shared mapping of [`crate::rows`].

pub(crate) use crate::rows::*;
