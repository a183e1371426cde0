//! Sales: `POST /api/v1/admin/sales`, `GET /api/v1/sales`, `GET /api/v1/sales/{id}`. The two
//! reads are conditional ([`crate::conditional`]): `ETag`, `Cache-Control`, `304`.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    Json,
};
use flashsale_proto::inventory::{CreateSaleRequest, GetSaleRequest, ListSalesRequest};

use crate::{
    api::{NewSale, Sale},
    app::AppState,
    auth::AdminUser,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath},
    upstream::CallContext,
};

/// Creates a sale (admins only).
#[utoipa::path(post, path = "/api/v1/admin/sales", tag = "sales", request_body = NewSale,
    security(("bearer" = [])),
    responses(
        (status = 201, body = Sale),
        (status = 401, body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(user): AdminUser,
    ctx: CallContext,
    ApiJson(body): ApiJson<NewSale>,
) -> Result<(StatusCode, Json<Sale>), ApiError> {
    let mut inventory = state.upstreams.inventory.clone();
    let sale = ctx
        .run(inventory.create_sale(ctx.request(CreateSaleRequest {
            name: body.name,
            price_cents: body.price_cents,
            stock: body.stock,
            per_user_limit: body.per_user_limit,
            starts_at_ms: body.starts_at.timestamp_millis(),
            ends_at_ms: body.ends_at.timestamp_millis(),
        })?))
        .await?;
    state.sales.remember(&sale).await;
    tracing::info!(sale_id = sale.id, admin = user.user_id, "sale created");
    Ok((StatusCode::CREATED, Json(sale.into())))
}

/// Lists sales with their live remaining stock.
#[utoipa::path(get, path = "/api/v1/sales", tag = "sales",
    params(("If-None-Match" = Option<String>, Header, description = "an ETag of an earlier answer")),
    responses(
        (status = 200, body = Vec<Sale>, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "unchanged since the ETag in If-None-Match"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ctx: CallContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reply = ctx
        .retry(ListSalesRequest {}, |request| {
            let mut inventory = state.upstreams.inventory.clone();
            async move { inventory.list_sales(request).await }
        })
        .await?;
    let sales: Vec<Sale> = reply.sales.into_iter().map(Sale::from).collect();
    crate::conditional::json(&headers, &sales)
}

/// One sale with its live remaining stock.
#[utoipa::path(get, path = "/api/v1/sales/{id}", tag = "sales",
    params(("id" = i64, Path, description = "sale id"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag of an earlier answer")),
    responses(
        (status = 200, body = Sale, headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "unchanged since the ETag in If-None-Match"),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ctx: CallContext,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reply = ctx
        .retry(GetSaleRequest { id }, |request| {
            let mut inventory = state.upstreams.inventory.clone();
            async move { inventory.get_sale(request).await }
        })
        .await?;
    // A shopper looks at the sale before buying: the buy path then needs no lookup.
    if let Some(sale) = &reply.sale {
        state.sales.remember(sale).await;
    }
    let sale: Sale = reply
        .sale
        .map(Sale::from)
        .ok_or_else(|| ApiError::not_found("no such sale"))?;
    crate::conditional::json(&headers, &sale)
}
