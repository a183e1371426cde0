//! Operations endpoints: liveness, readiness, metrics, recent traces, the OpenAPI document.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    Json,
};
use flashsale_proto::{auth::GetSessionRequest, inventory::GetSaleRequest, order::GetOrderRequest};

use crate::{
    api::{Health, TraceView},
    app::AppState,
    error::{ApiError, ErrorCode},
    upstream::CallContext,
};

/// Liveness: the gateway process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: every service behind the gateway answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>, ctx: CallContext) -> (StatusCode, Json<Health>) {
    let u = &state.upstreams;
    let (mut auth, mut inventory, mut orders) =
        (u.auth.clone(), u.inventory.clone(), u.orders.clone());
    let ready = async {
        ctx.run(auth.get_session(ctx.request(GetSessionRequest::default())?))
            .await?;
        ctx.run(inventory.get_sale(ctx.request(GetSaleRequest::default())?))
            .await?;
        ctx.run(orders.get_order(ctx.request(GetOrderRequest::default())?))
            .await?;
        Ok::<_, crate::error::ApiError>(())
    }
    .await;
    match ready {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
            }),
        ),
    }
}

/// Prometheus metrics of this process.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// The spans of one recent trace, from this process's span buffer (`flashsale dev` keeps one;
/// `flashsale trace <id>` prints it as a tree).
#[utoipa::path(get, path = "/debug/traces/{id}", tag = "operations",
    params(("id" = String, Path, description = "Trace id, 32 lowercase hex digits")),
    responses((status = 200, body = TraceView), (status = 400), (status = 404)))]
pub async fn trace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TraceView>, ApiError> {
    let Some(buffer) = &state.traces else {
        return Err(ApiError::not_found(
            "this process keeps no traces (set traces.buffer_spans; `flashsale dev` keeps them)",
        ));
    };
    if id.len() != 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTraceId,
            "a trace id is 32 lowercase hex digits",
        ));
    }
    let spans = buffer.trace(&id);
    if spans.is_empty() {
        return Err(ApiError::not_found(
            "no spans of this trace in the buffer (unknown, unsampled or already evicted)",
        ));
    }
    Ok(Json(TraceView {
        trace_id: id,
        spans,
    }))
}

/// The OpenAPI document of this API.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document().clone())
}
