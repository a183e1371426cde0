//! The buy flow, written once: validate → local answer → limits → reserve → submit.
//!
//! [`buy`] runs it over this gateway's memory ([`BuyMemory`]) and a [`BuyUpstream`]; the HTTP
//! handler (`routes::orders::buy`) only extracts the request and renders the answer. What each
//! answer means (status, code, metric, what the sale cache learns) is looked up in
//! [`super::outcome`].

use std::sync::Arc;

use flashsale_proto::{
    inventory::ReserveRequest,
    order::{OrderRequest, SubmitRequest},
};
use uuid::Uuid;

use super::{
    charge::{charge, ChargeAt},
    memory::BuyMemory,
    outcome::{reserve_row, BuyMetric, Refusal, SaleNote},
    request::BuyInput,
    upstream::BuyUpstream,
};
use crate::{error::ApiError, sales_cache::SaleMeta};

/// Runs one buy; the order id of the queued order, or why not.
///
/// Guarantees: a buy is charged against the limits at most once (before the sale's lookup
/// when the sale is not cached, else after the local answers, which are never charged); an
/// accepted order id is remembered before it is queued; a failed submit leaves the reservation
/// held for a retry with the same key (it is never released here, because a failed or
/// timed-out call may still have committed).
pub async fn buy<U: BuyUpstream>(
    memory: BuyMemory<'_>,
    upstream: &U,
    input: BuyInput,
) -> Result<Uuid, ApiError> {
    let sale_id = input.sale_id;
    input.check_quantity().map_err(|r| r.refuse(sale_id))?;
    let order_id = input.order_id();

    let charge_at = ChargeAt::for_sale(memory.sales.is_cached(sale_id));
    if charge_at == ChargeAt::BeforeLookup {
        charge(upstream, &input, charge_at).await?;
    }
    let sale = local_answer(memory, upstream, &input, order_id)
        .await?
        .map_err(|r| r.refuse(sale_id))?;
    if charge_at == ChargeAt::BeforeReserve {
        charge(upstream, &input, charge_at).await?;
    }

    // The atomic decision.
    let reserved = upstream
        .reserve(ReserveRequest {
            order_id: order_id.to_string(),
            sale_id,
            user_id: input.user_id,
            quantity: input.quantity,
        })
        .await?;
    let row = reserve_row(reserved.outcome(), reserved.remaining, sale.per_user_limit);
    if row.refusal.is_none() {
        // Remembered before queueing: a retry after a lost answer (504) must reach the
        // inventory again even once this gateway answers "sold out" locally.
        memory.accepted.insert(order_id.as_u128(), ());
    }
    match row.sale {
        SaleNote::Keep => {}
        SaleNote::MarkSoldOut => memory.sales.mark_sold_out(&sale, input.accepted_at_ms),
        SaleNote::ClearSoldOut => memory.sales.clear_sold_out(&sale),
        SaleNote::RememberMissing => memory.sales.remember_missing(sale_id).await,
    }
    if let Some(refusal) = row.refusal {
        return Err(refusal.refuse(sale_id));
    }

    // Durably queue the order. On failure the reservation stays held for this order id: a
    // retry with the same key re-queues it.
    upstream
        .submit(SubmitRequest {
            order: Some(OrderRequest {
                order_id: order_id.to_string(),
                user_id: input.user_id,
                sale_id,
                quantity: input.quantity,
                price_cents: reserved.price_cents,
                idempotency_key: input.idempotency_key,
                accepted_at_ms: input.accepted_at_ms,
            }),
        })
        .await?;
    BuyMetric::Accepted.count(Some(sale_id));
    Ok(order_id)
}

/// The answers given from memory, without a hop (but for the lookup of a sale not cached yet):
/// unknown sale, not started, quantity over the per-user limit, known sold out — unless this
/// gateway accepted this very order id, whose retry must get its order back. A closed sale is
/// left to the inventory, which still answers a retry of an accepted buy with its order.
///
/// The outer error is a failed lookup; the inner one a refusal.
async fn local_answer<U: BuyUpstream>(
    memory: BuyMemory<'_>,
    upstream: &U,
    input: &BuyInput,
    order_id: Uuid,
) -> Result<Result<Arc<SaleMeta>, Refusal>, ApiError> {
    let sale_id = input.sale_id;
    let Some(sale) = memory
        .sales
        .get_or_fetch(sale_id, upstream.fetch_sale(sale_id))
        .await?
    else {
        return Ok(Err(Refusal::UnknownSale));
    };
    let now = input.accepted_at_ms;
    Ok(if now < sale.starts_at_ms {
        Err(Refusal::NotStartedLocal)
    } else if input.quantity > sale.per_user_limit {
        Err(Refusal::OverPerUserLimit {
            limit: sale.per_user_limit,
        })
    } else if memory.sales.known_sold_out(&sale, now)
        && !memory.accepted.contains_key(&order_id.as_u128())
    {
        Err(Refusal::SoldOutLocal)
    } else {
        Ok(sale)
    })
}
