//! Buying and orders: `POST /api/v1/sales/{id}/orders` (the buy path), `GET /api/v1/orders`,
//! `GET /api/v1/orders/{id}`, `POST /api/v1/orders/{id}/pay`, `POST /api/v1/orders/{id}/cancel`.
//!
//! The order id of a buy is derived from (user, `Idempotency-Key`) — a UUIDv5 — so every retry
//! of one request names the same order: the inventory reserves for it at most once and the
//! order queue and table keep it at most once. Only the owner of an order can see or change
//! it; anyone else gets `404`, as if it did not exist.

use axum::{extract::State, http::StatusCode, Json};
use flashsale_proto::{
    inventory::{ReserveOutcome, ReserveRequest},
    order::{
        GetOrderRequest, ListOrdersRequest, OrderRequest, SubmitRequest, TransitionOutcome,
        TransitionReply, TransitionRequest,
    },
};
use uuid::Uuid;

use crate::{
    api::{BuyAccepted, BuyRequest, Order},
    app::AppState,
    auth::AuthUser,
    error::{ApiError, ErrorBody},
    extract::{ApiJsonOrEmpty, ApiPath, IdempotencyKey},
    upstream::CallContext,
};

/// Namespace of order ids (UUIDv5 of `"{user_id}:{idempotency_key}"`).
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_51e2_9a3b_4f7d_8e21_5c4a_0b9d_3e77);

/// The order id for a user's idempotency key.
pub fn order_id_for(user_id: i64, key: &str) -> Uuid {
    Uuid::new_v5(&ORDER_NAMESPACE, format!("{user_id}:{key}").as_bytes())
}

/// Largest quantity a buy may ask for (the per-user limit usually binds first).
const MAX_QUANTITY: i64 = 1_000_000;

/// Counts a buy decision of a sale this gateway knows (so the sale label stays bounded by the
/// sales that exist; a refusal before the sale is known is labelled `unknown`).
fn outcome(label: &'static str, sale: Option<i64>) {
    let sale = sale.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
    metrics::counter!(flashsale_telemetry::metrics::BUY_OUTCOMES, "outcome" => label, "sale" => sale)
        .increment(1);
}

/// Counts a refusal by the anti-brush limits as a buy outcome.
fn count_rate_limited(result: &Result<(), ApiError>, sale: Option<i64>) {
    if result
        .as_ref()
        .is_err_and(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
    {
        outcome("rate_limited", sale);
    }
}

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
    let quantity = body.quantity;
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::invalid(format!(
            "quantity must be between 1 and {MAX_QUANTITY}"
        )));
    }
    let order_id = order_id_for(user.user_id, &key);
    let now = flashsale_storage::now_ms();

    // A sale this gateway has not cached costs a hop to the inventory: that is counted like a
    // buy (random sale ids must not buy unlimited lookups).
    let charged = !state.sales.is_cached(sale_id);
    if charged {
        let checked = state
            .limits
            .check_buy(user.client.ip, user.user_id, sale_id)
            .await;
        count_rate_limited(&checked, None);
        checked?;
    }

    // Local fast path: unknown, not-yet-open and sold-out sales cost no hop. A closed sale is
    // left to the inventory, which still answers a retry of an accepted buy with its order.
    let sale = state
        .sales
        .get(sale_id, &state.upstreams, &ctx)
        .await?
        .ok_or_else(|| ApiError::not_found("no such sale"))?;
    if now < sale.starts_at_ms {
        outcome("not_started", Some(sale_id));
        return Err(ApiError::new(
            StatusCode::TOO_EARLY,
            "sale_not_started",
            "the sale has not started yet",
        ));
    }
    if quantity > sale.per_user_limit {
        return Err(ApiError::invalid(format!(
            "quantity exceeds the per-user limit of {}",
            sale.per_user_limit
        )));
    }
    if state.sales.known_sold_out(&sale, now) && !state.accepted.contains_key(&order_id.as_u128()) {
        outcome("sold_out_local", Some(sale_id));
        return Err(ApiError::conflict("sold_out", "sold out"));
    }

    // Anti-brush limits guard what costs: the inventory's decision. The local answers above
    // cost nothing and tell nothing that GET /sales/{id} does not, so they are not counted
    // (and a sold-out stampede does not even reach a shared limiter in Redis). Counted once.
    if !charged {
        let checked = state
            .limits
            .check_buy(user.client.ip, user.user_id, sale_id)
            .await;
        count_rate_limited(&checked, Some(sale_id));
        checked?;
    }

    // The atomic decision.
    // Reserve is idempotent per order id, so a call an instance could not take is retried.
    let reserve = ReserveRequest {
        order_id: order_id.to_string(),
        sale_id,
        user_id: user.user_id,
        quantity,
    };
    let reserved = ctx.retry_batched(reserve, &state.buy_calls.reserve).await?;
    match reserved.outcome() {
        ReserveOutcome::Reserved | ReserveOutcome::AlreadyReserved => {
            // Remembered before queueing: a retry after a lost answer (504) must reach the
            // inventory again even once this gateway answers "sold out" locally.
            state.accepted.insert(order_id.as_u128(), ());
            if reserved.remaining <= 0 {
                state.sales.mark_sold_out(&sale, now);
            } else {
                state.sales.clear_sold_out(&sale);
            }
        }
        ReserveOutcome::SoldOut => {
            if reserved.remaining <= 0 {
                state.sales.mark_sold_out(&sale, now);
            }
            outcome("sold_out", Some(sale_id));
            return Err(ApiError::conflict("sold_out", "sold out"));
        }
        ReserveOutcome::LimitReached => {
            if reserved.remaining > 0 {
                state.sales.clear_sold_out(&sale);
            }
            outcome("limit_reached", Some(sale_id));
            return Err(ApiError::conflict(
                "per_user_limit_reached",
                format!(
                    "you already hold the per-user limit of {} for this sale",
                    sale.per_user_limit
                ),
            ));
        }
        ReserveOutcome::SaleNotFound => {
            state.sales.remember_missing(sale_id).await;
            return Err(ApiError::not_found("no such sale"));
        }
        ReserveOutcome::NotStarted => {
            return Err(ApiError::new(
                StatusCode::TOO_EARLY,
                "sale_not_started",
                "the sale has not started yet",
            ));
        }
        ReserveOutcome::Ended => {
            outcome("ended", Some(sale_id));
            return Err(ApiError::conflict("sale_ended", "the sale has ended"));
        }
        ReserveOutcome::OrderIdConflict => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            ))
        }
        ReserveOutcome::Unspecified => return Err(ApiError::unavailable()),
    }

    // Durably queue the order. On failure the reservation stays held for this order id: a retry
    // with the same key re-queues it; it is never released here, because a failed or timed-out
    // call may still have been committed.
    // Submit is idempotent per order id (the journal keeps an order id once).
    let submit = SubmitRequest {
        order: Some(OrderRequest {
            order_id: order_id.to_string(),
            user_id: user.user_id,
            sale_id,
            quantity,
            price_cents: reserved.price_cents,
            idempotency_key: key,
            accepted_at_ms: now,
        }),
    };
    ctx.retry_batched(submit, &state.buy_calls.submit).await?;
    outcome("accepted", Some(sale_id));
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
                "illegal_transition",
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
