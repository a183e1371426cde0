//! `POST /api/v1/users`: registration.

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::auth::RegisterRequest;

use crate::{
    api::{Credentials, UserCreated},
    app::AppState,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    upstream::CallContext,
};

/// Registers a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = Credentials,
    responses(
        (status = 201, body = UserCreated),
        (status = 409, description = "email already registered", body = ErrorBody),
        (status = 422, description = "invalid email or password", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ctx: CallContext,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    let email = flashsale_auth::service::normalize_email(&body.email).map_err(ApiError::invalid)?;
    let mut client = state.upstreams.auth.clone();
    let reply = ctx
        .run(client.register(ctx.request(RegisterRequest {
            email: email.clone(),
            password: body.password,
        })?))
        .await?;
    if reply.email_taken {
        return Err(ApiError::conflict(
            "email_taken",
            "this email is already registered",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(UserCreated {
            id: reply.user_id,
            email,
        }),
    ))
}
