//! Opening the database a URL names, with the per-connection settings that bound lock waits to
//! [`BUSY_TIMEOUT`]. Tables are created by the services that own them ([`crate::schema`]).

use std::str::FromStr;

use sqlx::{
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Executor,
};

use crate::{Database, Durability, Engine, BUSY_TIMEOUT};

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL is not a database URL this build supports.
    #[error(
        "unsupported database url {0:?}: expected sqlite://PATH, postgres://… or mysql://… (mariadb://…)"
    )]
    UnsupportedUrl(String),
    /// The database could not be opened.
    #[error("cannot open database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Opens the database at `url` (creating a missing SQLite file; a server's database must exist)
/// (each service then applies its own tables: [`Database::migrate`]).
///
/// `max_connections` bounds the pool; SQLite serialises writers anyway, so a handful of
/// connections for concurrent readers is enough. SQLite connections are not pinged before each
/// use (sqlx's `test_before_acquire`): an embedded file has no link to lose, and the ping was a
/// round trip to the connection's worker thread on every query (~2 % of the server's CPU in a
/// `bench accept` rush). Server connections keep the ping, which finds one a restart killed.
///
/// Every connection waits at most [`BUSY_TIMEOUT`] for a lock: SQLite's busy timeout;
/// PostgreSQL's `lock_timeout` and `statement_timeout`; MySQL's `innodb_lock_wait_timeout` (row
/// locks) and `lock_wait_timeout` (table metadata locks). MySQL sessions also add
/// `STRICT_ALL_TABLES` to the `sql_mode`, so a bad value is an error, never a silent truncation.
/// [`Durability::Power`] sets `synchronous_commit = on` on PostgreSQL; on MySQL the equivalent
/// (`innodb_flush_log_at_trx_commit = 1`) is server-wide, so it is checked and a weaker server
/// setting is logged as a warning.
pub async fn connect(
    url: &str,
    durability: Durability,
    max_connections: u32,
) -> Result<Database, StorageError> {
    let max_connections = max_connections.max(1);
    let db = match Engine::of_url(url) {
        Some(Engine::Sqlite) => connect_sqlite(url, durability, max_connections).await?,
        Some(Engine::Postgres) => connect_postgres(url, durability, max_connections).await?,
        Some(Engine::MySql) => connect_mysql(url, durability, max_connections).await?,
        None => return Err(StorageError::UnsupportedUrl(url.to_owned())),
    };
    tracing::debug!(engine = db.engine().name(), "database ready");
    Ok(db)
}

/// SQLite's page cache per connection, in KiB when negative (`PRAGMA cache_size`): 64 MiB. It fills only with pages a connection reads, so it never holds more than the database itself, per connection.
const SQLITE_CACHE_SIZE: &str = "-65536";

/// WAL pages after which a commit checkpoints (`PRAGMA wal_autocheckpoint`): 40 MiB of 4 KiB
/// pages.
const SQLITE_WAL_AUTOCHECKPOINT: &str = "10000";

async fn connect_sqlite(
    url: &str,
    durability: Durability,
    max_connections: u32,
) -> Result<Database, StorageError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(StorageError::Connect)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Process => SqliteSynchronous::Normal,
            Durability::Power => SqliteSynchronous::Full,
        })
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // A rush inserts orders at random places of six b-trees (the table, its UUID key and
        // four indexes): SQLite's default 2 MiB page cache would re-read pages from the OS on
        // almost every insert once a sale has some 10,000 orders.
        .pragma("cache_size", SQLITE_CACHE_SIZE)
        // Checkpoint every 40 MiB of WAL rather than 4 MiB: a page updated by many commits in
        // between is copied back once.
        .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT);
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(StorageError::Connect)?;
    Ok(Database::Sqlite(pool))
}

async fn connect_postgres(
    url: &str,
    durability: Durability,
    max_connections: u32,
) -> Result<Database, StorageError> {
    let wait = BUSY_TIMEOUT.as_millis().to_string();
    let mut settings = vec![("lock_timeout", wait.clone()), ("statement_timeout", wait)];
    if durability == Durability::Power {
        settings.push(("synchronous_commit", "on".into()));
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(StorageError::Connect)?
        .options(settings);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await
        .map_err(StorageError::Connect)?;
    Ok(Database::Postgres(pool))
}

async fn connect_mysql(
    url: &str,
    durability: Durability,
    max_connections: u32,
) -> Result<Database, StorageError> {
    // sqlx speaks the MySQL protocol to MariaDB as well; only its URL parser wants `mysql:`.
    let url = match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_owned(),
    };
    let options = MySqlConnectOptions::from_str(&url).map_err(StorageError::Connect)?;
    let wait = BUSY_TIMEOUT.as_secs().max(1);
    let pool = MySqlPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(
                    format!(
                        "SET SESSION innodb_lock_wait_timeout = {wait}, lock_wait_timeout = {wait}, \
                         sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')"
                    )
                    .as_str(),
                )
                .await
                .map(|_| ())
            })
        })
        .connect_with(options)
        .await
        .map_err(StorageError::Connect)?;
    if durability == Durability::Power {
        let (flush,): (i64,) =
            sqlx::query_as("SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
                .fetch_one(&pool)
                .await
                .map_err(StorageError::Connect)?;
        if flush != 1 {
            tracing::warn!(
                innodb_flush_log_at_trx_commit = flush,
                "durability = power, but this MySQL server does not flush its log at every commit"
            );
        }
    }
    Ok(Database::MySql(pool))
}
