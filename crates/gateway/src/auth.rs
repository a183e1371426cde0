//! Authentication of API requests: JWT verified locally, session checked and bound to the client.
//!
//! The token's signature and claims are checked in-process (no hop). Its session (`jti`) is
//! fetched from the auth service and cached for `session_cache_ms`, so a logout on any gateway
//! is honoured everywhere within that time, while a rush costs one session lookup per user per
//! interval. Concurrent lookups of one session share a single call. With session binding on, a
//! token presented from another IP or User-Agent than the login's is refused.

use std::{sync::Arc, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use flashsale_proto::auth::{self as pb, GetSessionRequest};
use moka::future::Cache;

use crate::{
    app::AppState,
    client_ip::binding_hash,
    error::ApiError,
    extract::ClientInfo,
    upstream::{CallContext, Upstreams},
};

/// A live session as the gateway caches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Owner.
    pub user_id: i64,
    /// Whether the owner is an admin.
    pub admin: bool,
    ip_hash: Vec<u8>,
    user_agent_hash: Vec<u8>,
}

/// Sessions looked up recently (`None`: unknown or revoked).
#[derive(Clone)]
pub struct SessionCache {
    cache: Cache<String, Option<Arc<SessionInfo>>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").finish_non_exhaustive()
    }
}

impl SessionCache {
    /// A cache trusting each lookup for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The session behind `jti`, from the cache or the auth service.
    pub async fn get(
        &self,
        jti: &str,
        upstreams: &Upstreams,
        ctx: &CallContext,
    ) -> Result<Option<Arc<SessionInfo>>, ApiError> {
        self.cache
            .try_get_with_by_ref(jti, async {
                let mut client = upstreams.auth.clone();
                let reply = ctx
                    .run(client.get_session(ctx.request(GetSessionRequest {
                        jti: jti.to_owned(),
                    })?))
                    .await?;
                Ok::<_, ApiError>(reply.session.map(|s| {
                    Arc::new(SessionInfo {
                        user_id: s.user_id,
                        admin: s.role == i32::from(pb::Role::Admin),
                        ip_hash: s.ip_hash,
                        user_agent_hash: s.user_agent_hash,
                    })
                }))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Forgets a session on this gateway at once (logout).
    pub async fn forget(&self, jti: &str) {
        self.cache.invalidate(jti).await;
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub user_id: i64,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Session (token) id.
    pub jti: String,
    /// The client the request came from.
    pub client: ClientInfo,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state
            .keys
            .verify(token.trim())
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let ctx = CallContext::from_request_parts(parts, state).await?;
        let session = state
            .sessions
            .get(&claims.jti, &state.upstreams, &ctx)
            .await?
            .filter(|s| s.user_id.to_string() == claims.sub)
            .ok_or_else(|| ApiError::unauthorized("session expired or revoked"))?;
        if state.config.bind_sessions
            && (session.ip_hash != binding_hash(client.ip.to_string().as_bytes())
                || session.user_agent_hash != binding_hash(client.user_agent.as_bytes()))
        {
            return Err(ApiError::unauthorized(
                "token presented from another client",
            ));
        }
        Ok(Self {
            user_id: session.user_id,
            admin: session.admin,
            jti: claims.jti,
            client,
        })
    }
}

/// An authenticated admin; anyone else is refused with `403` before the body is read.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.admin {
            Ok(Self(user))
        } else {
            Err(ApiError::forbidden("only admins may do this"))
        }
    }
}
