//! Database access shared by the flashsale services.
//!
//! Every service keeps its source of truth (users, sales, orders, the order-queue journal) in one
//! relational database. This crate opens it and applies the versioned migrations in
//! `migrations/`. The embedded default is a SQLite file in WAL mode: readers never block the
//! single writer, and a commit survives a `kill -9` of the process (the WAL is in the OS page
//! cache before `COMMIT` returns). `synchronous = FULL` additionally survives power loss, at the
//! price of an fsync per commit; the services batch their writes so that cost is shared.

pub mod periodic;

use std::{str::FromStr, time::Duration};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use sqlx::SqlitePool;

/// Longest a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL is not a database URL this build supports.
    #[error("unsupported database url {0:?}: expected sqlite://PATH")]
    UnsupportedUrl(String),
    /// The database could not be opened.
    #[error("cannot open database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a process crash (WAL + `synchronous = NORMAL`).
    #[default]
    Process,
    /// Survives power loss as well (`synchronous = FULL`: fsync on every commit).
    Power,
}

/// Opens (creating if missing) the database at `url` and applies all migrations.
///
/// `max_connections` bounds the pool; SQLite serialises writers anyway, so a handful of
/// connections for concurrent readers is enough.
pub async fn connect(
    url: &str,
    durability: Durability,
    max_connections: u32,
) -> Result<SqlitePool, StorageError> {
    if !url.starts_with("sqlite:") {
        return Err(StorageError::UnsupportedUrl(url.to_owned()));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(StorageError::Connect)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Process => SqliteSynchronous::Normal,
            Durability::Power => SqliteSynchronous::Full,
        })
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .connect_with(options)
        .await
        .map_err(StorageError::Connect)?;
    migrate(&pool).await?;
    tracing::debug!(url, "database ready");
    Ok(pool)
}

/// Applies the migrations. Several processes may start on one fresh database at once (the
/// services of `flashsale serve`); SQLite migrations take no lock, so a process that loses the
/// race fails on a table the winner just created. It then simply tries again: the winner's
/// migration is recorded by then and is skipped.
async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
    let mut attempt = 0;
    loop {
        match sqlx::migrate!("./migrations").run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(StorageError::Migrate(e)),
        }
    }
}

/// Milliseconds since the Unix epoch, the time unit stored in every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
