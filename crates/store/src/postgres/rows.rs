//! Row mapping on PostgreSQL: the shared mapping of [`crate::rows`].

pub(crate) use crate::rows::*;
