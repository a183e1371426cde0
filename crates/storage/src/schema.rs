//! Each service's tables, migrated by the service that owns them.
//!
//! A service crate keeps its migrations beside its code (`migrations/<engine>/`, one set per
//! engine, the same tables, keys and indexes in each dialect) and hands them over as a
//! [`Schema`]: a function from the engine to sqlx's [`Migrator`] for it (built with
//! `sqlx::migrate!`, so the SQL is compiled into the binary). The service applies its schema when
//! it assembles itself ([`Database::migrate`]); nothing else creates its tables.
//!
//! All services may share one database and sqlx keeps one `_sqlx_migrations` table per
//! database, so each service's versions have their own range (auth 1000s, inventory 2000s,
//! order 3000s) and a migrator ignores the versions of the others.
//!
//! **Databases from before the split.** Until then one set in this crate created every table
//! (versions 1–3). A database that recorded version 1 is brought to that set's last version
//! first ([`Database::migrate`] does it); the services' first migrations then find their tables
//! (`CREATE TABLE IF NOT EXISTS`) and only record themselves.

use std::time::Duration;

use sqlx::migrate::Migrator;

use crate::{with_pool, Database, Engine, StorageError};

/// A service's migrations for an engine.
pub type Schema = fn(Engine) -> Migrator;

/// The one set every table came from before the split (kept for databases created by it, and
/// for tests that build such a database).
pub fn legacy(engine: Engine) -> Migrator {
    match engine {
        Engine::Sqlite => sqlx::migrate!("./legacy_migrations/sqlite"),
        Engine::Postgres => sqlx::migrate!("./legacy_migrations/postgres"),
        Engine::MySql => sqlx::migrate!("./legacy_migrations/mysql"),
    }
}

impl Database {
    /// Applies `schema` (the migrations its service has not applied yet), after bringing a
    /// database created before the split up to date. Safe when several processes migrate at
    /// once (sqlx locks on the servers; SQLite serialises writers; a lost race is retried).
    pub async fn migrate(&self, schema: Schema) -> Result<(), StorageError> {
        if self.has_legacy_schema().await {
            self.run_migrator(legacy(self.engine())).await?;
        }
        self.run_migrator(schema(self.engine())).await
    }

    /// Whether the pre-split set created this database (it recorded its version 1).
    async fn has_legacy_schema(&self) -> bool {
        // Fails on a database without the table: a new one, or one no migration ran on.
        let found: Result<Vec<(i64,)>, _> = self
            .fetch_all(
                "SELECT version FROM _sqlx_migrations WHERE version = 1",
                &[],
            )
            .await;
        found.is_ok_and(|rows| !rows.is_empty())
    }

    async fn run_migrator(&self, mut migrator: Migrator) -> Result<(), StorageError> {
        // The other services' versions are in the same table.
        migrator.set_ignore_missing(true);
        let mut attempt = 0;
        loop {
            let result = with_pool!(self, pool, _DB => migrator.run(pool).await);
            match result {
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
}
