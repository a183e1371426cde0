//! Running one statement on whichever engine a [`Database`] is: `?` placeholders, arguments
//! that are integers or text ([`Arg`]), rows decoded into the same tuple type on every engine.
//!
//! This covers every fixed statement of the stores; only statements built row by row (batch
//! inserts, `IN (…)` lists) use [`with_pool!`](crate::with_pool) and a `QueryBuilder` directly.

use sqlx::{mysql::MySqlRow, postgres::PgRow, sqlite::SqliteRow, FromRow};

use crate::{with_pool, Database};

/// One argument of a statement (the schema stores only integers and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// An integer.
    Int(i64),
    /// A text.
    Text(&'a str),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(v)
    }
}

/// A row type every engine can decode.
pub trait Row:
    Send
    + Unpin
    + for<'r> FromRow<'r, SqliteRow>
    + for<'r> FromRow<'r, PgRow>
    + for<'r> FromRow<'r, MySqlRow>
{
}

impl<T> Row for T where
    T: Send
        + Unpin
        + for<'r> FromRow<'r, SqliteRow>
        + for<'r> FromRow<'r, PgRow>
        + for<'r> FromRow<'r, MySqlRow>
{
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match *arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        query
    }};
}

impl Database {
    /// Every row `sql` selects.
    pub async fn fetch_all<R: Row>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<R>, sqlx::Error> {
        let sql = self.sql(sql);
        with_pool!(self, pool, DB => bind_all!(sqlx::query_as::<DB, R>(&sql), args).fetch_all(pool).await)
    }

    /// The first row `sql` selects, if any.
    pub async fn fetch_optional<R: Row>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<R>, sqlx::Error> {
        let sql = self.sql(sql);
        with_pool!(self, pool, DB => bind_all!(sqlx::query_as::<DB, R>(&sql), args).fetch_optional(pool).await)
    }

    /// The one row `sql` selects (an error when there is none).
    pub async fn fetch_one<R: Row>(&self, sql: &str, args: &[Arg<'_>]) -> Result<R, sqlx::Error> {
        let sql = self.sql(sql);
        with_pool!(self, pool, DB => bind_all!(sqlx::query_as::<DB, R>(&sql), args).fetch_one(pool).await)
    }

    /// Runs `sql`; returns the rows it affected.
    pub async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let sql = self.sql(sql);
        with_pool!(self, pool, DB => {
            bind_all!(sqlx::query::<DB>(&sql), args).execute(pool).await.map(|r| r.rows_affected())
        })
    }

    /// Runs an `INSERT` of one row into a table whose `id` the database assigns, and returns that
    /// id: `… RETURNING id` on SQLite and PostgreSQL; on MySQL, which has no `RETURNING`, the
    /// insert id the server reports for this very statement.
    pub async fn insert_returning_id(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<i64, sqlx::Error> {
        match self {
            Database::MySql(pool) => {
                let done = bind_all!(sqlx::query::<sqlx::MySql>(sql), args)
                    .execute(pool)
                    .await?;
                Ok(i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX))
            }
            Database::Sqlite(_) | Database::Postgres(_) => {
                let (id,): (i64,) = self.fetch_one(&format!("{sql} RETURNING id"), args).await?;
                Ok(id)
            }
        }
    }
}

/// Whether `e` is a violated unique key (a duplicate), on any engine.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
