//! The tables this service owns (`orders`, and `order_queue`, the queue journal), one migration
//! set per engine in `migrations/<engine>/`, compiled in. The service applies them when it assembles itself
//! ([`flashsale_storage::Database::migrate`]); tests name this schema for their databases.

use flashsale_storage::{sqlx::migrate::Migrator, Engine};

/// This service's migrations for `engine` (a [`flashsale_storage::Schema`]).
pub fn schema(engine: Engine) -> Migrator {
    match engine {
        Engine::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Engine::Postgres => sqlx::migrate!("./migrations/postgres"),
        Engine::MySql => sqlx::migrate!("./migrations/mysql"),
    }
}
