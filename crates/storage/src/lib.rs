//! Database access shared by the flashsale services.
//!
//! Every service keeps its source of truth (users, sales, orders, the order-queue journal) in one
//! relational database, chosen by its URL: `sqlite:` (the embedded default), `postgres://` /
//! `postgresql://`, or `mysql://` / `mariadb://`. This crate opens it as one [`Database`] handle;
//! each service applies its own tables' migrations through it ([`Schema`], [`Database::migrate`]:
//! the service's `migrations/<engine>/`, the same tables, keys and indexes in each dialect).
//!
//! Durability: the embedded SQLite file runs in WAL mode, so readers never block the single
//! writer and a commit survives a `kill -9` of the process (the WAL is in the OS page cache
//! before `COMMIT` returns); `synchronous = FULL` additionally survives power loss, at the price
//! of an fsync per commit. On PostgreSQL and MySQL a commit survives the crash of *our* process
//! by construction (the server has it); surviving a crash of the server or the machine is the
//! server's setting (`synchronous_commit`, `innodb_flush_log_at_trx_commit`), see [`connect`].
//! The services batch their writes so that the cost of a commit is shared.

mod connect;
mod database;
mod query;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use connect::{connect, StorageError};
pub use database::{Database, Engine};
pub use query::{is_unique_violation, Arg, Row};
pub use schema::Schema;
pub use sqlx;
pub use sqlx::{MySqlPool, PgPool, SqlitePool};

/// Longest a statement waits for another connection's lock before failing, on every engine:
/// SQLite's busy timeout, PostgreSQL's `lock_timeout` and `statement_timeout`, MySQL's
/// `innodb_lock_wait_timeout` and `lock_wait_timeout` (all set on every connection).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a process crash (SQLite: WAL + `synchronous = NORMAL`; servers: their default).
    #[default]
    Process,
    /// Survives power loss as well (SQLite: `synchronous = FULL`, an fsync on every commit;
    /// PostgreSQL: `synchronous_commit = on` for our sessions; MySQL: checked at connect, see
    /// [`connect`]).
    Power,
}

/// The wall clock in milliseconds since the Unix epoch (the kernel's; kept here for the
/// callers that already hold this crate).
pub use flashsale_kernel::now_ms;
/// Periodic work (the kernel's).
pub use flashsale_kernel::periodic;
