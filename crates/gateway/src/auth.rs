//! Authentication of API requests: JWT verified locally, session checked and bound to the client.
//!
//! The token's signature and claims are checked in-process (no hop). Its session (`jti`: owner,
//! role, IP and User-Agent hashes) comes from the auth service, and is cached here for the
//! session's whole lifetime — warmed at login, which passes through the gateway, or fetched once
//! on a miss (concurrent lookups of one session share a single call). A rush of shoppers who
//! logged in beforehand therefore never waits for the auth service.
//!
//! Revocations reach the cache by polling: every `revocation_poll_ms` the gateway asks auth for
//! the sessions revoked since its last position, drops them from the cache and remembers them as
//! revoked. If the last successful poll is older than `revocation_max_staleness_ms`, the cache is
//! not trusted: every request asks auth (and nothing is cached), so a logout is honoured within
//! that bound even while polling fails. A new auth epoch (its session store restarted, so every
//! session is gone) empties the cache. With session binding on, a token presented from another
//! IP or User-Agent than the login's is refused.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use flashsale_proto::auth::{self as pb, GetSessionRequest, RevocationsRequest};
use moka::{future::Cache, Expiry};
use subtle::ConstantTimeEq;

use crate::{
    app::AppState,
    client_ip::binding_hash,
    error::ApiError,
    extract::ClientInfo,
    upstream::{CallContext, Upstreams},
    verified_tokens::{VerifiedToken, VerifiedTokens},
};

/// A live session as the gateway caches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Owner.
    pub user_id: i64,
    /// Whether the owner is an admin.
    pub admin: bool,
    /// Hash of the client IP the session is bound to.
    pub ip_hash: Vec<u8>,
    /// Hash of the client User-Agent the session is bound to.
    pub user_agent_hash: Vec<u8>,
    /// When the session ends (Unix ms).
    pub expires_at_ms: i64,
}

impl SessionInfo {
    /// The session as the auth service describes it.
    pub fn from_pb(s: &pb::Session) -> Self {
        Self {
            user_id: s.user_id,
            admin: s.role == i32::from(pb::Role::Admin),
            ip_hash: s.ip_hash.clone(),
            user_agent_hash: s.user_agent_hash.clone(),
            expires_at_ms: s.expires_at_ms,
        }
    }
}

/// Keeps each session until it expires; "no such session" is not kept.
struct UntilSessionEnds;

impl Expiry<String, Option<Arc<SessionInfo>>> for UntilSessionEnds {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Option<Arc<SessionInfo>>,
        _: Instant,
    ) -> Option<Duration> {
        let left = value
            .as_ref()
            .map_or(0, |s| s.expires_at_ms - flashsale_kernel::now_ms());
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

/// Longest a revoked session id is remembered (tokens live 15 minutes by default).
const REMEMBER_REVOKED: Duration = Duration::from_secs(60 * 60);

/// Sessions known to this gateway, kept current by polling the auth service's revocations.
#[derive(Clone)]
pub struct SessionCache {
    cache: Cache<String, Option<Arc<SessionInfo>>, foldhash::quality::RandomState>,
    revoked: moka::sync::Cache<String, (), foldhash::quality::RandomState>,
    /// Tokens that passed full authentication here (dropped with the sessions on a new epoch).
    verified: VerifiedTokens,
    /// Position in auth's revocation log already applied.
    position: Arc<AtomicU64>,
    /// Auth's session-store epoch the cache belongs to (0: none yet).
    epoch_ms: Arc<AtomicI64>,
    /// The cache is trusted until then (Unix ms).
    fresh_until_ms: Arc<AtomicI64>,
    max_staleness_ms: i64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").finish_non_exhaustive()
    }
}

impl SessionCache {
    /// An empty cache, trusted for `max_staleness` after each successful revocation poll.
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(2_000_000)
                .expire_after(UntilSessionEnds)
                .build_with_hasher(foldhash::quality::RandomState::default()),
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(REMEMBER_REVOKED)
                .build_with_hasher(foldhash::quality::RandomState::default()),
            verified: VerifiedTokens::new(),
            position: Arc::new(AtomicU64::new(0)),
            epoch_ms: Arc::new(AtomicI64::new(0)),
            fresh_until_ms: Arc::new(AtomicI64::new(0)),
            max_staleness_ms: flashsale_kernel::duration::as_ms_i64(max_staleness),
        }
    }

    fn fresh(&self) -> bool {
        flashsale_kernel::now_ms() < self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// Auth's session-store epoch the cache belongs to; [`SessionCache::remember_verified`]
    /// takes the value read before an authentication began.
    pub fn epoch(&self) -> i64 {
        self.epoch_ms.load(Ordering::Acquire)
    }

    /// The remembered full authentication of `token` from this client (`binding`: its IP and
    /// User-Agent when sessions are bound), if the cache may be trusted right now and the
    /// session has not been revoked.
    pub fn verified(
        &self,
        token: &str,
        binding: Option<(IpAddr, &str)>,
    ) -> Option<Arc<VerifiedToken>> {
        let now_ms = flashsale_kernel::now_ms();
        if now_ms >= self.fresh_until_ms.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.verified.get(token, now_ms, binding)?;
        if self.revoked.contains_key(&entry.jti) {
            return None;
        }
        Some(entry)
    }

    /// Remembers that `token` passed full authentication, unless the session was revoked or
    /// auth's epoch changed (from `epoch`, read before the authentication began) meanwhile.
    pub fn remember_verified(&self, token: &str, verified: VerifiedToken, epoch: i64) {
        if self.fresh() && self.epoch() == epoch && !self.revoked.contains_key(&verified.jti) {
            self.verified.insert(token, verified);
        }
    }

    /// The session behind `jti`: from the cache while it is fresh, else from the auth service.
    pub async fn get(
        &self,
        jti: &str,
        upstreams: &Upstreams,
        ctx: &CallContext,
    ) -> Result<Option<Arc<SessionInfo>>, ApiError> {
        if self.revoked.contains_key(jti) {
            return Ok(None);
        }
        let fetch = async {
            let mut client = upstreams.auth.clone();
            let reply = ctx
                .run(client.get_session(ctx.request(GetSessionRequest {
                    jti: jti.to_owned(),
                })?))
                .await?;
            Ok::<_, ApiError>(reply.session.map(|s| Arc::new(SessionInfo::from_pb(&s))))
        };
        let session = if self.fresh() {
            self.cache
                .try_get_with_by_ref(jti, fetch)
                .await
                .map_err(|e| (*e).clone())?
        } else {
            fetch.await?
        };
        // A revocation may have been applied while the lookup was in flight.
        if self.revoked.contains_key(jti) {
            self.cache.invalidate(jti).await;
            return Ok(None);
        }
        Ok(session)
    }

    /// Caches a session just created by a login through this gateway.
    pub async fn warm(&self, jti: &str, session: SessionInfo) {
        if self.fresh() && !self.revoked.contains_key(jti) {
            self.cache
                .insert(jti.to_owned(), Some(Arc::new(session)))
                .await;
        }
    }

    /// Forgets a session on this gateway at once (logout here).
    pub async fn forget(&self, jti: &str) {
        self.revoked.insert(jti.to_owned(), ());
        self.cache.invalidate(jti).await;
    }

    /// Applies the revocations logged by the auth service since the last poll.
    pub async fn poll_revocations(
        &self,
        upstreams: &Upstreams,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let started = flashsale_kernel::now_ms();
        let ctx = CallContext::detached(timeout);
        let mut client = upstreams.auth.clone();
        let after = self.position.load(Ordering::Acquire);
        let reply = ctx
            .run(client.revocations(ctx.request(RevocationsRequest { after })?))
            .await?;
        let known_epoch = self.epoch_ms.load(Ordering::Acquire);
        // A log that went back (a session store restored from an older copy) is as unknown as a
        // new epoch: revocations may have been lost with it.
        if reply.epoch_ms != known_epoch || reply.last < after {
            // Auth restarted (or first contact): every cached session may be gone. Start over
            // from the beginning of the new log before trusting the cache again.
            self.fresh_until_ms.store(0, Ordering::Release);
            self.cache.invalidate_all();
            self.verified.clear();
            self.epoch_ms.store(reply.epoch_ms, Ordering::Release);
            self.position.store(0, Ordering::Release);
            if after != 0 || known_epoch != 0 {
                return Ok(());
            }
        }
        for jti in reply.jtis {
            self.revoked.insert(jti.clone(), ());
            self.cache.invalidate(&jti).await;
        }
        self.position.store(reply.last, Ordering::Release);
        // Trust the cache for `max_staleness` counted from when this poll was sent.
        self.fresh_until_ms.store(
            started.saturating_add(self.max_staleness_ms),
            Ordering::Release,
        );
        Ok(())
    }

    /// Polls revocations every `interval`, forever (the caller aborts the task).
    pub async fn run_poller(self, upstreams: Upstreams, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self
                .poll_revocations(&upstreams, interval.max(Duration::from_millis(200)))
                .await
            {
                tracing::warn!(
                    code = e.code.as_str(),
                    "revocation poll failed; sessions are looked up at auth until it succeeds"
                );
            }
        }
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

pub(crate) fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
}

/// Whether two binding hashes are equal, in time independent of where they differ.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

impl AuthUser {
    /// Authentication: a token this gateway already authenticated for this client is taken from
    /// the memo ([`crate::verified_tokens`]); any other goes through [`AuthUser::verify`].
    async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let token = bearer(parts)?;
        let binding = state
            .config
            .bind_sessions
            .then_some((client.ip, client.user_agent.as_str()));
        if let Some(known) = state.sessions.verified(token, binding) {
            return Ok(Self {
                user_id: known.user_id,
                admin: known.admin,
                jti: known.jti.clone(),
                client,
            });
        }
        let token = token.to_owned();
        let epoch = state.sessions.epoch();
        let (user, expires_at_ms) = Self::verify(parts, state, &token, client).await?;
        state.sessions.remember_verified(
            &token,
            VerifiedToken {
                user_id: user.user_id,
                admin: user.admin,
                jti: user.jti.clone(),
                expires_at_ms,
                ip: user.client.ip,
                user_agent: user.client.user_agent.clone(),
            },
            epoch,
        );
        Ok(user)
    }

    /// Full authentication: token signature and claims, live session, client binding. Also
    /// returns until when that holds (the earlier of the token's and the session's expiry, ms).
    async fn verify(
        parts: &mut Parts,
        state: &AppState,
        token: &str,
        client: ClientInfo,
    ) -> Result<(Self, i64), ApiError> {
        let claims = state
            .keys
            .verify(token)
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        let ctx = CallContext::from_request_parts(parts, state).await?;
        let session = state
            .sessions
            .get(&claims.jti, &state.upstreams, &ctx)
            .await?
            .filter(|s| s.user_id.to_string() == claims.sub)
            .ok_or_else(|| ApiError::unauthorized("session expired or revoked"))?;
        if state.config.bind_sessions
            && !(same_hash(
                &session.ip_hash,
                &binding_hash(client.ip.to_string().as_bytes()),
            ) && same_hash(
                &session.user_agent_hash,
                &binding_hash(client.user_agent.as_bytes()),
            ))
        {
            return Err(ApiError::unauthorized(
                "token presented from another client",
            ));
        }
        let expires_at_ms = claims.exp.saturating_mul(1000).min(session.expires_at_ms);
        Ok((
            Self {
                user_id: session.user_id,
                admin: session.admin,
                jti: claims.jti,
                client,
            },
            expires_at_ms,
        ))
    }

    /// `insecure_skip_auth` (benchmarks only): the token's claims, unverified.
    async fn unverified(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = flashsale_token::TokenKeys::read_unverified(bearer(parts)?)
            .map_err(|_| ApiError::unauthorized("invalid token"))?;
        let user_id = claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("invalid token"))?;
        Ok(Self {
            user_id,
            admin: false,
            jti: claims.jti,
            client: ClientInfo::from_request_parts(parts, state).await?,
        })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.insecure_skip_auth {
            Self::unverified(parts, state).await
        } else {
            Self::authenticate(parts, state).await
        }
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
        // Always fully authenticated, even when customer authentication is off for a benchmark.
        let user = AuthUser::authenticate(parts, state).await?;
        if user.admin {
            Ok(Self(user))
        } else {
            Err(ApiError::forbidden("only admins may do this"))
        }
    }
}
