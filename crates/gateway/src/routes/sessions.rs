//! `POST /api/v1/sessions` (login) and `DELETE /api/v1/sessions/current` (logout).

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::auth::{LoginRequest, RevokeRequest};

use crate::{
    api::{time, Credentials, TokenResponse},
    app::AppState,
    auth::{AuthUser, SessionInfo},
    client_ip::binding_hash,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ClientInfo},
    upstream::CallContext,
    verified_tokens::VerifiedToken,
};

/// Logs in: returns a token bound to this client's IP and User-Agent.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = Credentials,
    responses(
        (status = 201, body = TokenResponse),
        (status = 401, description = "wrong email or password", body = ErrorBody),
        (status = 429, description = "too many attempts for this account or from this address; see Retry-After", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ctx: CallContext,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    state.limits.check_login(client.ip, &body.email).await?;
    let epoch = state.sessions.epoch();
    let mut auth = state.upstreams.auth.clone();
    let ip_hash = binding_hash(client.ip.to_string().as_bytes());
    let user_agent_hash = binding_hash(client.user_agent.as_bytes());
    let reply = ctx
        .run(auth.login(ctx.request(LoginRequest {
            email: body.email.clone(),
            password: body.password,
            ip_hash: ip_hash.clone(),
            user_agent_hash: user_agent_hash.clone(),
        })?))
        .await?;
    if reply.token.is_empty() {
        // Personal data masked: the account's first letter and domain, the client's network.
        tracing::info!(
            account = %flashsale_telemetry::pii::mask_email(&body.email),
            client = %flashsale_telemetry::pii::mask_ip(client.ip),
            "login refused"
        );
        return Err(ApiError::unauthorized("wrong email or password"));
    }
    // Cache the new session now, and remember the token as authenticated for this client, so
    // the owner's first buy needs neither a lookup at auth nor a second verification.
    if let Ok(claims) = state.keys.verify(&reply.token) {
        if let Ok(user_id) = claims.sub.parse() {
            let admin = reply.role == i32::from(flashsale_proto::auth::Role::Admin);
            let session = SessionInfo {
                user_id,
                admin,
                ip_hash,
                user_agent_hash,
                expires_at_ms: reply.expires_at_ms,
            };
            state.sessions.warm(&claims.jti, session).await;
            state.sessions.remember_verified(
                &reply.token,
                VerifiedToken {
                    user_id,
                    admin,
                    jti: claims.jti,
                    expires_at_ms: claims.exp.saturating_mul(1000).min(reply.expires_at_ms),
                    ip: client.ip,
                    user_agent: client.user_agent,
                },
                epoch,
            );
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token: reply.token,
            expires_at: time(reply.expires_at_ms),
        }),
    ))
}

/// Logs out: revokes the current token everywhere.
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "sessions",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
) -> Result<StatusCode, ApiError> {
    let mut auth = state.upstreams.auth.clone();
    ctx.run(auth.revoke(ctx.request(RevokeRequest {
        jti: user.jti.clone(),
    })?))
    .await?;
    state.sessions.forget(&user.jti).await;
    Ok(StatusCode::NO_CONTENT)
}
