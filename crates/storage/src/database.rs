//! [`Database`]: one handle over the pool of whichever engine the URL chose, and the few
//! dialect differences the stores need ([`Engine`]).
//!
//! The stores write each statement once, with `?` placeholders, and run it through
//! [`with_pool!`](crate::with_pool), which expands the same code once per engine (sqlx's types
//! are per engine, so the three arms are type-checked separately); [`Database::sql`] turns the
//! placeholders into PostgreSQL's `$1, $2, …`. Only what really differs is spelled per engine:
//! how an insert skips duplicates ([`Engine::insert_skipping_duplicates`]) and how a new row's
//! id comes back (`RETURNING` versus MySQL's `LAST_INSERT_ID()`).

use std::borrow::Cow;

use sqlx::{MySqlPool, PgPool, SqlitePool};

/// The database engines a URL can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Embedded SQLite file (`sqlite:`).
    Sqlite,
    /// PostgreSQL server (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL or MariaDB server (`mysql://`, `mariadb://`).
    MySql,
}

impl Engine {
    /// Every engine, for tests that run on each.
    pub const ALL: [Engine; 3] = [Engine::Sqlite, Engine::Postgres, Engine::MySql];

    /// The engine a URL names, if any.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }

    /// The name used in logs and test names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// `(head, tail)` that make `{head} table (cols) VALUES …{tail}` insert the new rows and
    /// silently skip any that would violate a unique key (primary or secondary).
    ///
    /// MySQL has no `ON CONFLICT`; `INSERT IGNORE` is used rather than `ON DUPLICATE KEY UPDATE
    /// id = id` because sqlx connects with `CLIENT_FOUND_ROWS`, under which a skipped duplicate
    /// would still count as an affected row — and the callers count new rows. `IGNORE` also
    /// turns over-long strings into truncating warnings, which is why the services refuse such
    /// values before they reach SQL.
    pub fn insert_skipping_duplicates(self) -> (&'static str, &'static str) {
        match self {
            Self::Sqlite | Self::Postgres => ("INSERT INTO", " ON CONFLICT DO NOTHING"),
            Self::MySql => ("INSERT IGNORE INTO", ""),
        }
    }
}

/// An open, migrated database: the pool of the engine its URL chose. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Database {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL / MariaDB.
    MySql(MySqlPool),
}

impl From<SqlitePool> for Database {
    fn from(pool: SqlitePool) -> Self {
        Self::Sqlite(pool)
    }
}

impl From<PgPool> for Database {
    fn from(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }
}

impl From<MySqlPool> for Database {
    fn from(pool: MySqlPool) -> Self {
        Self::MySql(pool)
    }
}

/// Runs `$body` with `$pool` bound to the engine's pool and `$db` naming its sqlx database type,
/// once per engine: write a statement once, run it on all three.
///
/// ```ignore
/// let n = with_pool!(&self.db, pool, DB => {
///     sqlx::query::<DB>(&self.db.sql("DELETE FROM t WHERE id = ?")).bind(id).execute(pool).await
/// })?.rows_affected();
/// ```
#[macro_export]
macro_rules! with_pool {
    ($database:expr, $pool:ident, $db:ident => $body:expr) => {
        match $database {
            $crate::Database::Sqlite($pool) => {
                #[allow(unused)]
                type $db = $crate::sqlx::Sqlite;
                $body
            }
            $crate::Database::Postgres($pool) => {
                #[allow(unused)]
                type $db = $crate::sqlx::Postgres;
                $body
            }
            $crate::Database::MySql($pool) => {
                #[allow(unused)]
                type $db = $crate::sqlx::MySql;
                $body
            }
        }
    };
}

impl Database {
    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres(_) => Engine::Postgres,
            Self::MySql(_) => Engine::MySql,
        }
    }

    /// `sql`, written with `?` placeholders, in this engine's dialect: PostgreSQL numbers them
    /// (`$1`, `$2`, …); a `?` inside a quoted literal is left alone.
    pub fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match self {
            Self::Postgres(_) => Cow::Owned(numbered_placeholders(sql)),
            Self::Sqlite(_) | Self::MySql(_) => Cow::Borrowed(sql),
        }
    }

    /// The SQLite pool, when this is SQLite (tests that inspect the embedded file).
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Self::Sqlite(pool) => Some(pool),
            Self::Postgres(_) | Self::MySql(_) => None,
        }
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool, _DB => pool.close().await);
    }
}

/// Rewrites `?` placeholders as `$1`, `$2`, … outside quoted literals and identifiers.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        assert_eq!(
            numbered_placeholders("SELECT '?', \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT '?', \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
        // An escaped quote ('') closes and reopens the literal: still inside.
        assert_eq!(
            numbered_placeholders("SELECT 'it''s ?' WHERE x = ?"),
            "SELECT 'it''s ?' WHERE x = $1"
        );
    }

    #[test]
    fn urls_choose_the_engine() {
        for (url, engine) in [
            ("sqlite://x.db", Some(Engine::Sqlite)),
            ("sqlite::memory:", Some(Engine::Sqlite)),
            ("postgres://u@h/db", Some(Engine::Postgres)),
            ("postgresql://u@h/db", Some(Engine::Postgres)),
            ("mysql://root@h/db", Some(Engine::MySql)),
            ("mariadb://root@h/db", Some(Engine::MySql)),
            ("redis://h", None),
            ("x.db", None),
        ] {
            assert_eq!(Engine::of_url(url), engine, "{url}");
        }
    }
}
