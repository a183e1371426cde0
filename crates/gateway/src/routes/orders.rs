//! Buying and orders: `POST /api/v1/sales/{id}/orders` (the buy path), `GET /api/v1/orders`,
//! `GET /api/v1/orders/{id}`, `POST /api/v1/orders/{id}/pay`, `POST /api/v1/orders/{id}/cancel`.
//!
//! The buy handler is an adapter: it extracts the request and hands it to the buy flow
//! ([`crate::buy`]), where the order id, the local answers, the limits, the reserve and the
//! submit live. Only the owner of an order can see or change it; anyone else gets `404`, as if
//! it did not exist.

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::order::{
    GetOrderRequest, ListOrdersRequest, TransitionOutcome, TransitionReply, TransitionRequest,
};
use uuid::Uuid;

use crate::{
    api::{BuyAccepted, BuyRequest, Order},
    app::AppState,
    auth::AuthUser,
    buy::{BuyInput, BuyMemory, Services},
    error::{ApiError, ErrorBody, ErrorCode},
    extract::{ApiJsonOrEmpty, ApiPath, IdempotencyKey},
    upstream::CallContext,
};

/// Buys from a sale. Retries with the same `Idempotency-Key` return the same order.
#[utoipa::path(post, path = "/api/v1/sales/{id}/orders", tag = "orders", request_body = BuyRequest,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "sale id"),
        ("Idempotency-Key" = String, Header, description = "client-chosen key; retries reuse it")),
    responses(
        (status = 202, body = BuyAccepted),
        (status = 400, description = "missing or invalid Idempotency-Key", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such sale", body = ErrorBody),
        (status = 409, description = "sold out, sale ended, or per-user limit reached", body = ErrorBody),
        (status = 422, description = "bad quantity, or the key was used for another request", body = ErrorBody),
        (status = 425, description = "sale not started", body = ErrorBody),
        (status = 429, description = "rate limited; see Retry-After", body = ErrorBody),
        (status = 504, description = "time budget spent", body = ErrorBody),
    ))]
pub async fn buy(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
    ApiPath(sale_id): ApiPath<i64>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<BuyRequest>,
) -> Result<(StatusCode, Json<BuyAccepted>), ApiError> {
    let input = BuyInput {
        user_id: user.user_id,
        client_ip: user.client.ip,
        sale_id,
        idempotency_key: key,
        quantity: body.quantity,
        accepted_at_ms: flashsale_kernel::now_ms(),
    };
    let memory = BuyMemory {
        sales: &state.sales,
        accepted: &state.accepted,
    };
    let order_id = crate::buy::buy(memory, &Services::new(&state, &ctx), input).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BuyAccepted {
            order_id: order_id.to_string(),
            status: "pending".into(),
        }),
    ))
}

fn parse_order_id(id: &str) -> Result<String, ApiError> {
    Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::not_found("no such order"))
}

/// One of the caller's orders.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Order), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    let order_id = parse_order_id(&id)?;
    let query = GetOrderRequest {
        order_id,
        user_id: user.user_id,
    };
    let reply = ctx
        .retry(query, |request| {
            let mut orders = state.upstreams.orders.clone();
            async move { orders.get_order(request).await }
        })
        .await?;
    reply
        .order
        .map(|o| Json(o.into()))
        .ok_or_else(|| ApiError::not_found("no such order"))
}

/// The caller's orders, newest first, including those still queued (`pending`).
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])),
    responses((status = 200, body = Vec<Order>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
) -> Result<Json<Vec<Order>>, ApiError> {
    let query = ListOrdersRequest {
        user_id: user.user_id,
    };
    let reply = ctx
        .retry(query, |request| {
            let mut orders = state.upstreams.orders.clone();
            async move { orders.list_orders(request).await }
        })
        .await?;
    Ok(Json(reply.orders.into_iter().map(Order::from).collect()))
}

fn transition_answer(reply: TransitionReply, verb: &str) -> Result<Json<Order>, ApiError> {
    match (reply.outcome(), reply.order) {
        (TransitionOutcome::Done, Some(order)) => Ok(Json(order.into())),
        (TransitionOutcome::Illegal, Some(order)) => {
            let order = Order::from(order);
            Err(ApiError::conflict(
                ErrorCode::IllegalTransition,
                format!("cannot {verb} an order that is {}", order.status),
            ))
        }
        (TransitionOutcome::NotFound, _) => Err(ApiError::not_found("no such order")),
        _ => Err(ApiError::unavailable()),
    }
}

/// Which transition a request asks for.
#[derive(Clone, Copy)]
enum Transition {
    Pay,
    Cancel,
}

async fn transition(
    state: &AppState,
    user: &AuthUser,
    ctx: &CallContext,
    id: &str,
    transition: Transition,
) -> Result<Json<Order>, ApiError> {
    let request = ctx.request(TransitionRequest {
        order_id: parse_order_id(id)?,
        user_id: user.user_id,
    })?;
    let mut orders = state.upstreams.orders.clone();
    let (reply, verb) = match transition {
        Transition::Pay => (ctx.run(orders.pay(request)).await?, "pay"),
        Transition::Cancel => (ctx.run(orders.cancel(request)).await?, "cancel"),
    };
    transition_answer(reply, verb)
}

/// Pays an unpaid order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/pay", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody),
        (status = 409, description = "not payable (pending, paid, cancelled or expired)", body = ErrorBody)))]
pub async fn pay(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    transition(&state, &user, &ctx, &id, Transition::Pay).await
}

/// Cancels an unpaid order and gives its stock back.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path, description = "order id")),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody),
        (status = 409, description = "not cancellable (pending, paid, cancelled or expired)", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    ctx: CallContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    transition(&state, &user, &ctx, &id, Transition::Cancel).await
}
