//! The error type of the bench.

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("invalid options: {0}")]
    Usage(String),
    /// An HTTP exchange failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The server answered something unexpected during preparation.
    #[error("{what}: unexpected answer {status}: {body}")]
    Unexpected {
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// Starting the server failed.
    #[error("spawning flashsale dev: {0}")]
    Spawn(String),
    /// Local I/O (temporary dir, report file).
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    /// The database could not be read.
    #[error("database: {0}")]
    Database(String),
    /// The Redis given with `--redis-url` could not be asked for its CPU.
    #[error("redis (--redis-url): {0}")]
    Redis(String),
    /// The `sse` scenario could not be run to its end (subscribers, buys).
    #[error("live stream (sse): {0}")]
    Stream(String),
    /// The ceiling server failed.
    #[error("ceiling server: {0}")]
    Ceiling(String),
    /// The guarantee check found violations.
    #[error("guarantee check FAILED: {}", .0.join("; "))]
    Guarantees(Vec<String>),
}

impl From<sqlx::Error> for BenchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<flashsale_storage::StorageError> for BenchError {
    fn from(e: flashsale_storage::StorageError) -> Self {
        Self::Database(e.to_string())
    }
}
