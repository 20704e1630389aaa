//! Private service instances for tests: each test (or suite) starts its own
//! PostgreSQL or NATS server from the binaries on the machine, in a
//! temporary directory on a free port, and stops it when dropped. Nothing
//! here uses services that may already run on the machine.

pub mod nats;
pub mod postgres;

pub use nats::Nats;
pub use postgres::Postgres;

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A binary is missing (the test command installs it: `scripts/test`).
    #[error("{0} not found; run scripts/test, which installs it")]
    Missing(String),
    /// The service failed to start or answer.
    #[error("{0}")]
    Failed(String),
    /// IO failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> Result<u16, TestkitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
