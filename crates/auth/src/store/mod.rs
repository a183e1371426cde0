//! Storage traits of the auth service and their implementations.
//!
//! * [`UserStore`]: users and password hashes; [`SqlUserStore`] keeps them in the SQL database.
//! * [`SessionStore`]: sessions keyed by token id (`jti`), plus a log of revocations that
//!   gateways poll so they can cache sessions for their whole lifetime.
//!   - [`MemorySessionStore`] keeps them in process memory (one auth instance).
//!   - [`RedisSessionStore`] keeps them in Redis, shared by every auth instance, so a logout
//!     through any instance reaches every gateway.
//!
//! Both session stores follow the same contract, checked by one conformance suite
//! (`crates/auth/tests/session_store.rs`):
//!
//! * a session is live while `now < expires_at_ms` (on the auth instance's clock); `get` and
//!   `revoke` treat an expired session exactly like an unknown one;
//! * `revoke` answers `true` once per live session and appends it to the revocation log at the
//!   next position (1, 2, 3, …); unknown, expired or already revoked sessions log nothing;
//! * revocations of sessions that have expired anyway may be dropped from the log (gateways drop
//!   such sessions at their expiry by themselves);
//! * `epoch_ms` identifies the store's data set: it changes only when every session is gone
//!   (restart of the process, or of a Redis without persistence), and then the log restarts.

mod memory;
mod redis;
mod sql;

use async_trait::async_trait;

pub use self::{memory::MemorySessionStore, redis::RedisSessionStore, sql::SqlUserStore};

/// Role of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A shopper.
    Customer,
    /// May create sales.
    Admin,
}

impl Role {
    /// The stored spelling of the role.
    fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    /// Reads a stored role; anything but `admin` is the least privileged role.
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
pub enum StoreError {
    /// The SQL database failed.
    #[error("auth storage failed: {0}")]
    Sql(#[from] sqlx::Error),
    /// Redis failed (unreachable, timed out, or answered unexpectedly).
    #[error("auth storage failed: {0}")]
    Redis(#[from] ::redis::RedisError),
}

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

impl crate::config::SessionBackend {
    /// The session store of this kind; the Redis one connects through `redis` (shared with the
    /// process's other Redis users).
    /// The memory store decides expiry by `clock` (Redis by its own).
    pub async fn open(
        self,
        redis: &flashsale_redis::SharedRedis,
        clock: flashsale_kernel::SharedClock,
    ) -> Result<std::sync::Arc<dyn SessionStore>, flashsale_redis::ConnectError> {
        Ok(match self {
            Self::Memory => std::sync::Arc::new(MemorySessionStore::with_clock(10_000_000, clock)),
            Self::Redis => std::sync::Arc::new(RedisSessionStore::new(redis.get().await?)),
        })
    }
}

/// A page of the revocation log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked session ids after the requested position, oldest first.
    pub jtis: Vec<String>,
    /// Position of the last revocation (of the last one returned, when the page is capped).
    pub last: u64,
    /// When the store started (Unix ms): sessions do not survive a new epoch.
    pub epoch_ms: i64,
}
