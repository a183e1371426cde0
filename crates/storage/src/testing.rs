//! A database for one integration test, on the real engine: [`TestDatabase`].
//!
//! SQLite lives in a temporary directory. PostgreSQL and MariaDB/MySQL get a fresh
//! `CREATE DATABASE flashsale_test_<uuid>` on the server named by `FLASHSALE_TEST_POSTGRES_URL` /
//! `FLASHSALE_TEST_MYSQL_URL` (defaults: the local servers, database `test`), dropped again when
//! the test ends — by [`DatabaseGuard::cleanup`] after a passing test, by its `Drop` (best effort)
//! after a panic. When a server cannot be reached the test is skipped with a message — except
//! under `CI=true`, where a missing server is a failure, never a silent pass.
//!
//! [`on_every_engine!`](crate::on_every_engine) turns one `async fn test(db: TestDatabase)`
//! into one `#[tokio::test]` per engine, so every backend runs the same behavioural suite.

use std::{future::Future, str::FromStr};

use sqlx::{
    mysql::MySqlConnectOptions, postgres::PgConnectOptions, ConnectOptions, Connection, Executor,
};

use crate::{connect, Database, Durability, Engine, Schema};

/// Default admin URL of the test PostgreSQL (a database it may connect to, not the test's own).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Default admin URL of the test MariaDB/MySQL.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Connections in a test database's pool.
const POOL_SIZE: u32 = 8;

/// A migrated database private to one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// The open database.
    pub db: Database,
    /// Its URL (hand it to services under test).
    pub url: String,
}

/// Drops a test's database when the test is over.
#[derive(Debug)]
pub struct DatabaseGuard {
    engine: Engine,
    /// The admin URL and the database name, for the server engines.
    server: Option<(String, String)>,
    /// The SQLite directory, deleted with the guard.
    _dir: Option<tempfile::TempDir>,
    db: Option<Database>,
}

fn admin_url(engine: Engine) -> String {
    let (var, default) = match engine {
        Engine::Sqlite => return String::new(),
        Engine::Postgres => ("FLASHSALE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        Engine::MySql => ("FLASHSALE_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
    };
    std::env::var(var).unwrap_or_else(|_| default.into())
}

/// `url` with its database (path) replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs one statement on the server's admin database.
async fn admin_execute(engine: Engine, admin: &str, statement: &str) -> Result<(), sqlx::Error> {
    match engine {
        Engine::Sqlite => Ok(()),
        Engine::Postgres => {
            let mut conn = PgConnectOptions::from_str(admin)?.connect().await?;
            conn.execute(statement).await?;
            conn.close().await
        }
        Engine::MySql => {
            let admin = admin.replacen("mariadb:", "mysql:", 1);
            let mut conn = MySqlConnectOptions::from_str(&admin)?.connect().await?;
            conn.execute(statement).await?;
            conn.close().await
        }
    }
}

/// The one rule of the test kit for a server that cannot be reached: fail under `CI=true`,
/// otherwise say why and skip.
fn unreachable(engine: Engine, e: &dyn std::fmt::Display) -> Option<(TestDatabase, DatabaseGuard)> {
    flashsale_testkit::server::skip_or_fail(
        &format!("the {} test server", engine.name()),
        e,
        &format!("set FLASHSALE_TEST_{}_URL", engine.name().to_uppercase()),
    );
    None
}

impl TestDatabase {
    /// A fresh database on `engine` with the tables of `schemas`; `None` (after saying why)
    /// when its server cannot be reached and this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when the server cannot be reached; when SQLite cannot open a temporary
    /// file; when a migration fails.
    pub async fn start_with(engine: Engine, schemas: &[Schema]) -> Option<(Self, DatabaseGuard)> {
        let (t, guard) = Self::start(engine).await?;
        for schema in schemas {
            t.db.migrate(*schema)
                .await
                .unwrap_or_else(|e| panic!("cannot migrate {}: {e}", t.url));
        }
        Some((t, guard))
    }

    /// A fresh, empty database on `engine` (no tables: a process under test creates its own);
    /// `None` (after saying why) when its server cannot be reached and this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when the server cannot be reached; when SQLite cannot open a temporary
    /// file.
    pub async fn start(engine: Engine) -> Option<(Self, DatabaseGuard)> {
        if engine == Engine::Sqlite {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let db = connect(&url, Durability::Process, POOL_SIZE)
                .await
                .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
            let guard = DatabaseGuard {
                engine,
                server: None,
                _dir: Some(dir),
                db: Some(db.clone()),
            };
            return Some((Self { db, url }, guard));
        }
        let admin = admin_url(engine);
        let name = format!("flashsale_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = admin_execute(engine, &admin, &format!("CREATE DATABASE {name}")).await {
            return unreachable(engine, &e);
        }
        let mut guard = DatabaseGuard {
            engine,
            server: Some((admin.clone(), name.clone())),
            _dir: None,
            db: None,
        };
        let url = with_database(&admin, &name);
        let db = match connect(&url, Durability::Process, POOL_SIZE).await {
            Ok(db) => db,
            Err(e) => panic!("cannot open the new test database {name}: {e}"),
        };
        guard.db = Some(db.clone());
        Some((Self { db, url }, guard))
    }

    /// The single `i64` that `sql` (with `?` placeholders, no arguments) selects, e.g. a count.
    ///
    /// # Panics
    /// When the query fails (a test failure anyway).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let (value,): (i64,) = self
            .db
            .fetch_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        value
    }

    /// The text column that `sql` (no arguments) selects, one value per row.
    ///
    /// # Panics
    /// When the query fails (a test failure anyway).
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows: Vec<(String,)> = self
            .db
            .fetch_all(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|(s,)| s).collect()
    }

    /// Runs a statement with no arguments (test fixtures); returns the rows it affected.
    ///
    /// # Panics
    /// When the statement fails (a test failure anyway).
    pub async fn execute(&self, sql: &str) -> u64 {
        self.db
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl DatabaseGuard {
    /// Closes the test's pool and drops its database.
    ///
    /// # Panics
    /// When the database cannot be dropped (it would be left behind).
    pub async fn cleanup(mut self) {
        if let Some(db) = self.db.take() {
            db.close().await;
        }
        if let Some((admin, name)) = self.server.take() {
            admin_execute(self.engine, &admin, &drop_statement(self.engine, &name))
                .await
                .unwrap_or_else(|e| panic!("cannot drop test database {name}: {e}"));
        }
    }
}

fn drop_statement(engine: Engine, name: &str) -> String {
    match engine {
        // Connections a panicking test left open must not keep it alive.
        Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        Engine::Sqlite | Engine::MySql => format!("DROP DATABASE IF EXISTS {name}"),
    }
}

impl Drop for DatabaseGuard {
    /// After a panic: drop the server database from a thread of its own (a `Drop` cannot await,
    /// and the test's runtime may be the one unwinding).
    fn drop(&mut self) {
        let Some((admin, name)) = self.server.take() else {
            return;
        };
        let engine = self.engine;
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(admin_execute(
                    engine,
                    &admin,
                    &drop_statement(engine, &name),
                ))
                .map_err(|e| format!("{name}: {e}"))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {e}");
        }
    }
}

/// Runs `test` on a fresh database of `engine` with the tables of `schemas`, and drops the
/// database afterwards (skipping, having said why, when the server is unreachable outside CI).
pub async fn run<F, Fut>(engine: Engine, schemas: &[Schema], test: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some((db, guard)) = TestDatabase::start_with(engine, schemas).await else {
        return;
    };
    test(db).await;
    guard.cleanup().await;
}

/// One `#[tokio::test]` per engine (`<name>::sqlite`, `<name>::postgres`, `<name>::mysql`) for
/// each `async fn <name>(db: TestDatabase)` listed, on a multi-threaded runtime (the suites
/// test real concurrency). `schemas = [..];` first names the tables the tests need (each
/// service's `schema`); without it the database is empty.
#[macro_export]
macro_rules! on_every_engine {
    (schemas = $schemas:tt; $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    $crate::testing::run($crate::Engine::Sqlite, &$schemas, super::$name).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    $crate::testing::run($crate::Engine::Postgres, &$schemas, super::$name).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn mysql() {
                    $crate::testing::run($crate::Engine::MySql, &$schemas, super::$name).await;
                }
            }
        )+
    };
    ($($name:ident),+ $(,)?) => {
        $crate::on_every_engine!(schemas = []; $($name),+);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("mysql://root@h", "x"), "mysql://root@h/x");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    async fn a_new_database_is_empty(t: TestDatabase) {
        for table in [
            "users",
            "sales",
            "orders",
            "order_queue",
            "_sqlx_migrations",
        ] {
            assert!(
                t.db.fetch_all::<(i64,)>(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .await
                    .is_err(),
                "{table} exists before any service migrated"
            );
        }
    }

    crate::on_every_engine!(a_new_database_is_empty);

    #[tokio::test]
    async fn a_server_database_is_gone_after_cleanup() {
        for engine in [Engine::Postgres, Engine::MySql] {
            let Some((t, guard)) = TestDatabase::start(engine).await else {
                continue;
            };
            let name = t.url.rsplit('/').next().unwrap_or_default().to_owned();
            drop(t);
            guard.cleanup().await;
            let admin = admin_url(engine);
            let err = connect(&with_database(&admin, &name), Durability::Process, 1).await;
            assert!(err.is_err(), "{name} on {} still exists", engine.name());
        }
    }
}
