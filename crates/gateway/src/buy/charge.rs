//! When a buy is charged against the anti-brush limits ([`ChargeAt`]), and the charge itself
//! ([`charge`]).
//!
//! The limits guard what costs: a hop to the inventory. A buy is charged exactly once. Local
//! answers (unknown, not started, sold out) cost nothing and tell nothing that
//! `GET /sales/{id}` does not, so they are not charged — a sold-out stampede does not even
//! reach a shared limiter in Redis. But a sale this gateway has not cached costs a lookup at
//! the inventory, so that buy is charged before the lookup (random sale ids must not buy
//! unlimited lookups).

use axum::http::StatusCode;

use super::{outcome::BuyMetric, request::BuyInput, upstream::BuyUpstream};
use crate::error::ApiError;

/// The point of the flow where a buy is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeAt {
    /// Before the sale's lookup: the sale is not cached, the lookup costs a hop.
    BeforeLookup,
    /// After the local answers, before the reserve: the sale is cached.
    BeforeReserve,
}

impl ChargeAt {
    /// Where a buy of a sale that is (or is not) in the sale cache is charged.
    pub fn for_sale(cached: bool) -> Self {
        if cached {
            Self::BeforeReserve
        } else {
            Self::BeforeLookup
        }
    }
}

/// Charges `input` at `at`: a refusal (`429`) is counted as a buy outcome, under the sale when
/// the sale is known by then.
pub async fn charge<U: BuyUpstream>(
    upstream: &U,
    input: &BuyInput,
    at: ChargeAt,
) -> Result<(), ApiError> {
    let checked = upstream
        .charge(input.client_ip, input.user_id, input.sale_id)
        .await;
    if checked
        .as_ref()
        .is_err_and(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
    {
        let sale = match at {
            ChargeAt::BeforeLookup => None,
            ChargeAt::BeforeReserve => Some(input.sale_id),
        };
        BuyMetric::RateLimited.count(sale);
    }
    checked
}
