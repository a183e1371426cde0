//! The auth gRPC service: register, login, session lookup, revoke.
//!
//! Input that can never be valid (a malformed email, a too-short password) is answered with
//! `INVALID_ARGUMENT` and a message safe to show; wrong credentials are an ordinary reply
//! (empty token), the same for an unknown email and a wrong password.

use std::sync::Arc;

use flashsale_proto::auth::{
    self as pb,
    auth_server::{Auth, AuthServer},
};
use tonic::{Request, Response, Status};

use crate::{
    password::{PasswordError, PasswordHasherPool},
    store::{Role, Session, SessionStore, StoreError, UserStore},
    token::TokenKeys,
    AuthConfig,
};

/// Errors building the service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad hashing parameters.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad admin credentials in configuration.
    #[error("invalid admin credentials: {0}")]
    InvalidAdmin(&'static str),
}

/// The auth service over its stores.
#[derive(Clone)]
pub struct AuthService {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    hasher: PasswordHasherPool,
    keys: TokenKeys,
    token_ttl_secs: i64,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

pub use flashsale_kernel::credentials::{check_password, normalize_email};

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "auth service failure");
    Status::internal("internal error")
}

impl AuthService {
    /// A service over the given stores and signing keys.
    pub fn new(
        config: &AuthConfig,
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        keys: TokenKeys,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            users,
            sessions,
            hasher: PasswordHasherPool::new(config.argon2)?,
            keys,
            token_ttl_secs: i64::try_from(config.token_ttl_secs).unwrap_or(900),
        })
    }

    /// Makes sure the configured first admin exists with this password and the admin role.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<i64, AuthError> {
        let email = normalize_email(email).map_err(AuthError::InvalidAdmin)?;
        check_password(password).map_err(AuthError::InvalidAdmin)?;
        let hash = self.hasher.hash(password.to_owned()).await?;
        if let Some(user) = self.users.find_by_email(&email).await? {
            self.users.update(user.id, &hash, Role::Admin).await?;
            return Ok(user.id);
        }
        match self.users.create(&email, &hash, Role::Admin).await? {
            Some(id) => Ok(id),
            // Created concurrently by another instance: promote it.
            None => match self.users.find_by_email(&email).await? {
                Some(user) => {
                    self.users.update(user.id, &hash, Role::Admin).await?;
                    Ok(user.id)
                }
                None => Err(AuthError::InvalidAdmin("admin vanished during bootstrap")),
            },
        }
    }

    /// The gRPC server for this service.
    pub fn into_server(self) -> AuthServer<Self> {
        AuthServer::new(self)
    }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let req = request.into_inner();
        let email = normalize_email(&req.email).map_err(Status::invalid_argument)?;
        check_password(&req.password).map_err(Status::invalid_argument)?;
        let hash = self.hasher.hash(req.password).await.map_err(internal)?;
        let created = self
            .users
            .create(&email, &hash, Role::Customer)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::RegisterReply {
            user_id: created.unwrap_or(0),
            email_taken: created.is_none(),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginReply>, Status> {
        let req = request.into_inner();
        // A malformed email cannot belong to anyone: same answer as a wrong password.
        let user = match normalize_email(&req.email) {
            Ok(email) => self.users.find_by_email(&email).await.map_err(internal)?,
            Err(_) => None,
        };
        let ok = self
            .hasher
            .verify(req.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await
            .map_err(internal)?;
        let Some(user) = user.filter(|_| ok) else {
            return Ok(Response::new(pb::LoginReply::default()));
        };
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let now_ms = flashsale_storage::now_ms();
        let now = now_ms / 1000;
        let expires_at_ms = (now + self.token_ttl_secs) * 1000;
        let token = self
            .keys
            .issue(user.id, &jti, now, self.token_ttl_secs)
            .map_err(internal)?;
        self.sessions
            .put(Session {
                jti,
                user_id: user.id,
                role: user.role,
                ip_hash: req.ip_hash,
                user_agent_hash: req.user_agent_hash,
                expires_at_ms,
            })
            .await
            .map_err(internal)?;
        tracing::info!(user_id = user.id, "login");
        Ok(Response::new(pb::LoginReply {
            token,
            expires_at_ms,
            role: role_to_pb(user.role).into(),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionReply>, Status> {
        let jti = request.into_inner().jti;
        let session = self.sessions.get(&jti).await.map_err(internal)?;
        Ok(Response::new(pb::GetSessionReply {
            session: session.map(|s| pb::Session {
                jti: s.jti,
                user_id: s.user_id,
                role: role_to_pb(s.role).into(),
                ip_hash: s.ip_hash,
                user_agent_hash: s.user_agent_hash,
                expires_at_ms: s.expires_at_ms,
            }),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeReply>, Status> {
        let revoked = self
            .sessions
            .revoke(&request.into_inner().jti)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::RevokeReply { revoked }))
    }

    async fn revocations(
        &self,
        request: Request<pb::RevocationsRequest>,
    ) -> Result<Response<pb::RevocationsReply>, Status> {
        let page = self
            .sessions
            .revocations(request.into_inner().after)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::RevocationsReply {
            jtis: page.jtis,
            last: page.last,
            epoch_ms: page.epoch_ms,
        }))
    }
}
