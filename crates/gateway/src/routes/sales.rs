//! Sales: `POST /api/v1/admin/sales`, `GET /api/v1/sales`, `GET /api/v1/sales/{id}` and the
//! sale's live stream `GET /api/v1/sales/{id}/events`. The reads are answered from the pages the
//! inventory's feed keeps current ([`crate::live_sales`]); while that feed is down they ask the
//! inventory. They are conditional ([`crate::conditional`]): `ETag`, `Cache-Control`, `304`.

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
    state.live.remember(&sale)?;
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
    if let Some(page) = state.live.list() {
        return Ok(page.respond(&headers));
    }
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
    if let Some(page) = state.live.page(id) {
        return page
            .map(|page| page.respond(&headers))
            .ok_or_else(|| ApiError::not_found("no such sale"));
    }
    let sale = fetch(&state, &ctx, id).await?;
    crate::conditional::json(&headers, &Sale::from(sale))
}

/// The sale from the inventory (the pages are not live); `404` when it does not exist.
async fn fetch(
    state: &AppState,
    ctx: &CallContext,
    id: i64,
) -> Result<flashsale_proto::inventory::Sale, ApiError> {
    let reply = ctx
        .retry(GetSaleRequest { id }, |request| {
            let mut inventory = state.upstreams.inventory.clone();
            async move { inventory.get_sale(request).await }
        })
        .await?;
    let sale = reply
        .sale
        .ok_or_else(|| ApiError::not_found("no such sale"))?;
    // A shopper looks at the sale before buying: the buy path then needs no lookup.
    state.sales.remember(&sale).await;
    Ok(sale)
}

/// The sale's live stream: a `sale` event with the sale as `GET /api/v1/sales/{id}` shows it, at
/// once and then on every change (at most ten a second), until the client goes away. A client
/// that reads slowly gets the latest state, never a backlog.
#[utoipa::path(get, path = "/api/v1/sales/{id}/events", tag = "sales",
    params(("id" = i64, Path, description = "sale id")),
    responses(
        (status = 200, description = "Server-Sent Events: `event: sale`, `data:` the sale as JSON",
            content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    ctx: CallContext,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let watcher = match state.live.subscribe(id) {
        Some(watcher) => watcher,
        None if state.live.is_live() => return Err(ApiError::not_found("no such sale")),
        None => {
            state.live.remember(&fetch(&state, &ctx, id).await?)?;
            state
                .live
                .subscribe(id)
                .ok_or_else(|| ApiError::not_found("no such sale"))?
        }
    };
    Ok(crate::live_sales::event_stream(watcher))
}
