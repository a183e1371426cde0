//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use flashsale_proto::{auth::GetSessionRequest, inventory::GetSaleRequest, order::GetOrderRequest};
use utoipa::OpenApi;

use crate::{api::Health, app::AppState, upstream::CallContext};

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

/// The OpenAPI document of this API.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}
