//! Storage traits of the auth service and their embedded implementations.
//!
//! * [`UserStore`]: users and password hashes; [`SqlUserStore`] keeps them in the SQL database.
//! * [`SessionStore`]: sessions keyed by token id (`jti`); [`MemorySessionStore`] keeps them in
//!   process memory with per-entry expiry, plus a log of revocations that gateways poll so
//!   they can cache sessions for their whole lifetime. A Redis implementation (shared by many
//!   auth instances) plugs in behind the same trait.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use flashsale_storage::SqlitePool;
use moka::{sync::Cache, Expiry};
use parking_lot::Mutex;

/// Role of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A shopper.
    Customer,
    /// May create sales.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Customer
        }
    }
}

/// A stored user.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: i64,
    /// PHC-format argon2id hash.
    pub password_hash: String,
    /// Role.
    pub role: Role,
}

/// A session: what a token's `jti` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Token id.
    pub jti: String,
    /// Owner.
    pub user_id: i64,
    /// Owner's role at login.
    pub role: Role,
    /// Hash of the client IP the session is bound to.
    pub ip_hash: Vec<u8>,
    /// Hash of the client User-Agent the session is bound to.
    pub user_agent_hash: Vec<u8>,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Storage errors. The cause is logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
#[error("auth storage failed: {0}")]
pub struct StoreError(#[from] sqlx::Error);

/// Users and their password hashes.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; `Ok(None)` when the email is taken.
    async fn create(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<Option<i64>, StoreError>;
    /// Finds a user by (normalised) email.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Sets a user's role and password hash (admin bootstrap).
    async fn update(&self, id: i64, password_hash: &str, role: Role) -> Result<(), StoreError>;
}

/// Sessions keyed by `jti`.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a session until its expiry.
    async fn put(&self, session: Session) -> Result<(), StoreError>;
    /// Looks a live session up.
    async fn get(&self, jti: &str) -> Result<Option<Session>, StoreError>;
    /// Revokes a session; `true` when it existed.
    async fn revoke(&self, jti: &str) -> Result<bool, StoreError>;
    /// Sessions revoked after position `after` of the revocation log.
    async fn revocations(&self, after: u64) -> Result<Revocations, StoreError>;
}

/// A page of the revocation log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked session ids after the requested position, oldest first.
    pub jtis: Vec<String>,
    /// Position of the last revocation.
    pub last: u64,
    /// When the store started (Unix ms): sessions do not survive a new epoch.
    pub epoch_ms: i64,
}

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

/// Sessions in process memory, each evicted at its own expiry, and the log of revocations
/// (kept until the revoked session would have expired anyway).
#[derive(Clone)]
pub struct MemorySessionStore {
    sessions: Cache<String, Session>,
    log: Arc<Mutex<RevocationLog>>,
    epoch_ms: i64,
}

#[derive(Debug, Default)]
struct RevocationLog {
    /// (position, jti, session expiry in Unix ms), oldest first.
    entries: VecDeque<(u64, String, i64)>,
    last: u64,
}

impl std::fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySessionStore")
            .field("sessions", &self.sessions.entry_count())
            .finish()
    }
}

struct UntilExpiry;

impl Expiry<String, Session> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Session,
        _now: Instant,
    ) -> Option<Duration> {
        let left = value.expires_at_ms - flashsale_storage::now_ms();
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

impl MemorySessionStore {
    /// An empty store holding at most `capacity` sessions.
    pub fn new(capacity: u64) -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry)
                .build(),
            log: Arc::new(Mutex::new(RevocationLog::default())),
            epoch_ms: flashsale_storage::now_ms(),
        }
    }
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new(10_000_000)
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn put(&self, session: Session) -> Result<(), StoreError> {
        self.sessions.insert(session.jti.clone(), session);
        Ok(())
    }

    async fn get(&self, jti: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions
            .get(jti)
            .filter(|s| s.expires_at_ms > flashsale_storage::now_ms()))
    }

    async fn revoke(&self, jti: &str) -> Result<bool, StoreError> {
        let Some(session) = self.sessions.remove(jti) else {
            return Ok(false);
        };
        let now = flashsale_storage::now_ms();
        let mut log = self.log.lock();
        log.last += 1;
        let position = log.last;
        log.entries
            .push_back((position, session.jti, session.expires_at_ms));
        // Revocations of sessions that have expired anyway are no longer news.
        while log
            .entries
            .front()
            .is_some_and(|(_, _, expires)| *expires < now)
        {
            log.entries.pop_front();
        }
        Ok(true)
    }

    async fn revocations(&self, after: u64) -> Result<Revocations, StoreError> {
        let log = self.log.lock();
        Ok(Revocations {
            jtis: log
                .entries
                .iter()
                .filter(|(position, _, _)| *position > after)
                .map(|(_, jti, _)| jti.clone())
                .collect(),
            last: log.last,
            epoch_ms: self.epoch_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(jti: &str) -> Session {
        Session {
            jti: jti.into(),
            user_id: 1,
            role: Role::Customer,
            ip_hash: vec![1],
            user_agent_hash: vec![2],
            expires_at_ms: flashsale_storage::now_ms() + 60_000,
        }
    }

    #[tokio::test]
    async fn revocations_are_logged_in_order_once() {
        let store = MemorySessionStore::new(100);
        for jti in ["a", "b", "c"] {
            store.put(session(jti)).await.unwrap();
        }
        let empty = store.revocations(0).await.unwrap();
        assert_eq!((empty.jtis.len(), empty.last), (0, 0));
        assert!(store.revoke("b").await.unwrap());
        assert!(!store.revoke("b").await.unwrap(), "revoked twice");
        assert!(!store.revoke("unknown").await.unwrap());
        assert!(store.revoke("a").await.unwrap());
        let all = store.revocations(0).await.unwrap();
        assert_eq!(all.jtis, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(all.last, 2);
        let newer = store.revocations(1).await.unwrap();
        assert_eq!(newer.jtis, vec!["a".to_owned()]);
        assert_eq!(store.get("a").await.unwrap(), None);
        assert!(store.get("c").await.unwrap().is_some());
        assert_eq!(all.epoch_ms, newer.epoch_ms);
    }
}
