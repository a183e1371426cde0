//! [`SqlUserStore`]: users and their argon2id password hashes in the SQL database (`users`).

use async_trait::async_trait;
use flashsale_storage::SqlitePool;

use super::{Role, StoreError, User, UserStore};

/// Users in the SQL database.
#[derive(Debug, Clone)]
pub struct SqlUserStore {
    pool: SqlitePool,
}

impl SqlUserStore {
    /// A store over an open, migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl UserStore for SqlUserStore {
    async fn create(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO users (email, password_hash, role, created_at_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(flashsale_storage::now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, password_hash, role FROM users WHERE email = ?")
                .bind(email)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, password_hash, role)| User {
            id,
            password_hash,
            role: Role::parse(&role),
        }))
    }

    async fn update(&self, id: i64, password_hash: &str, role: Role) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = ?, role = ? WHERE id = ?")
            .bind(password_hash)
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
