//! Private PostgreSQL instances (written next).
