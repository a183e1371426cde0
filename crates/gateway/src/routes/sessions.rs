//! `POST /api/v1/sessions` (login) and `DELETE /api/v1/sessions/current` (logout).

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::auth::{LoginRequest, RevokeRequest};

use crate::{
    api::{time, Credentials, TokenResponse},
    app::AppState,
    auth::AuthUser,
    client_ip::binding_hash,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ClientInfo},
    upstream::CallContext,
};

/// Logs in: returns a token bound to this client's IP and User-Agent.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = Credentials,
    responses(
        (status = 201, body = TokenResponse),
        (status = 401, description = "wrong email or password", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ctx: CallContext,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let mut auth = state.upstreams.auth.clone();
    let reply = ctx
        .run(auth.login(ctx.request(LoginRequest {
            email: body.email,
            password: body.password,
            ip_hash: binding_hash(client.ip.to_string().as_bytes()),
            user_agent_hash: binding_hash(client.user_agent.as_bytes()),
        })?))
        .await?;
    if reply.token.is_empty() {
        return Err(ApiError::unauthorized("wrong email or password"));
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
