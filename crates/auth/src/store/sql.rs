//! [`SqlUserStore`]: users and their argon2id password hashes in the SQL database (`users`), on
//! whichever engine the database URL chose.

use async_trait::async_trait;
use flashsale_storage::{is_unique_violation, Database};

use super::{Role, StoreError, User, UserStore};

/// Users in the SQL database.
#[derive(Debug, Clone)]
pub struct SqlUserStore {
    db: Database,
}

impl SqlUserStore {
    /// A store over an open, migrated database.
    pub fn new(db: impl Into<Database>) -> Self {
        Self { db: db.into() }
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
        // A taken email is a unique violation on every engine (one statement for all three).
        let inserted = self
            .db
            .insert_returning_id(
                "INSERT INTO users (email, password_hash, role, created_at_ms) VALUES (?, ?, ?, ?)",
                &[
                    email.into(),
                    password_hash.into(),
                    role.as_str().into(),
                    flashsale_storage::now_ms().into(),
                ],
            )
            .await;
        match inserted {
            Ok(id) => Ok(Some(id)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<(i64, String, String)> = self
            .db
            .fetch_optional(
                "SELECT id, password_hash, role FROM users WHERE email = ?",
                &[email.into()],
            )
            .await?;
        Ok(row.map(|(id, password_hash, role)| User {
            id,
            password_hash,
            role: Role::parse(&role),
        }))
    }

    async fn update(&self, id: i64, password_hash: &str, role: Role) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET password_hash = ?, role = ? WHERE id = ?",
                &[password_hash.into(), role.as_str().into(), id.into()],
            )
            .await?;
        Ok(())
    }
}
