//! `POST /api/v1/users`: registration.
//!
//! The answer does not say whether the email already had an account (that would let anyone
//! test a list of emails for accounts): a new email and a taken one both get `202` with the same
//! body, after the same work (the password is hashed either way). Whoever owns the address can
//! log in; a second registration changes nothing.

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::auth::RegisterRequest;

use crate::{
    api::{Credentials, RegistrationAccepted},
    app::AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ClientInfo},
    upstream::CallContext,
};

/// Registers a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = Credentials,
    responses(
        (status = 202, description = "registered, unless the email already was", body = RegistrationAccepted),
        (status = 422, description = "invalid email or password", body = ErrorBody),
        (status = 429, description = "too many registrations from this address; see Retry-After", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ctx: CallContext,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<RegistrationAccepted>), ApiError> {
    let email =
        flashsale_kernel::credentials::normalize_email(&body.email).map_err(ApiError::invalid)?;
    flashsale_kernel::credentials::check_password(&body.password).map_err(ApiError::invalid)?;
    state.limits.check_register(client.ip).await?;
    let mut auth = state.upstreams.auth.clone();
    let reply = ctx
        .run(auth.register(ctx.request(RegisterRequest {
            email: email.clone(),
            password: body.password,
        })?))
        .await?;
    if reply.email_taken {
        tracing::info!(
            account = %flashsale_telemetry::pii::mask_email(&email),
            client = %flashsale_telemetry::pii::mask_ip(client.ip),
            "registration of an existing email: nothing created"
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RegistrationAccepted {
            email,
            message: "registered unless this email already had an account; log in to continue"
                .into(),
        }),
    ))
}
