//! The auth service, assembled from its configuration section and the process's shared parts.
//!
//! Whoever hosts the service (the `flashsale` binary, a test) hands over the database, the
//! process's Redis handle and the signing keys; which session store is used, and whether Redis
//! is connected at all, is decided here from `auth.sessions`. The service has no background
//! workers.

use std::sync::Arc;

use flashsale_kernel::SharedClock;
use flashsale_redis::SharedRedis;
use flashsale_storage::Database;

use crate::{service::AuthError, store::SqlUserStore, token::TokenKeys, AuthConfig, AuthService};

/// What the auth service needs from the process that hosts it.
#[derive(Debug, Clone)]
pub struct AuthParts {
    /// The database holding `users`.
    pub db: Database,
    /// The process's Redis, connected only if sessions live there.
    pub redis: SharedRedis,
    /// Token signing and verifying keys.
    pub keys: TokenKeys,
    /// What time it is (when in-memory sessions expire).
    pub clock: SharedClock,
}

/// The first admin, created or promoted at every start (`admin_email` / `admin_password`).
#[derive(Clone)]
pub struct FirstAdmin {
    /// Their email.
    pub email: String,
    /// Their password (set at every start).
    pub password: String,
}

impl std::fmt::Debug for FirstAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstAdmin")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Why the auth service could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Its tables could not be migrated.
    #[error(transparent)]
    Storage(#[from] flashsale_storage::StorageError),
    /// Sessions live in Redis and Redis cannot be reached.
    #[error(transparent)]
    Redis(#[from] flashsale_redis::ConnectError),
    /// The service itself refused its settings or the first admin.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Builds the auth service: its tables migrated, session store chosen by `config.sessions`, users in the database,
/// and the first admin ready when one is configured.
pub async fn assemble(
    config: &AuthConfig,
    parts: AuthParts,
    admin: Option<&FirstAdmin>,
) -> Result<AuthService, AssembleError> {
    parts.db.migrate(crate::schema).await?;
    let sessions = config.sessions.open(&parts.redis, parts.clock).await?;
    let service = AuthService::new(
        config,
        Arc::new(SqlUserStore::new(parts.db)),
        sessions,
        parts.keys,
    )?;
    if let Some(admin) = admin {
        let id = service.ensure_admin(&admin.email, &admin.password).await?;
        tracing::info!(user_id = id, "admin account ready");
    }
    Ok(service)
}
