//! What every answer of the buy path means, in two tables.
//!
//! * [`Refusal::answer`]: each way the buy path refuses a buy → HTTP status, [`ErrorCode`] and
//!   the `outcome` label it is counted under in `flashsale_buy_outcomes_total` (if any).
//! * [`reserve_row`]: each inventory `Reserve` outcome → the buy's refusal (none when the stock
//!   is held) and what the answer teaches the sale cache.
//!
//! The flow ([`super::flow`]) only looks answers up here; changing what a client sees for an
//! outcome is changing one row.

use std::{cell::RefCell, collections::HashMap};

use axum::http::StatusCode;
use flashsale_proto::inventory::ReserveOutcome;

use super::request::MAX_QUANTITY;
use crate::error::{ApiError, ErrorCode};

/// The `outcome` label of `flashsale_buy_outcomes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyMetric {
    /// The order was queued (`202`).
    Accepted,
    /// The inventory said sold out.
    SoldOut,
    /// This gateway answered sold out from its cache.
    SoldOutLocal,
    /// This gateway answered "not started" from its cache.
    NotStarted,
    /// The buyer already holds the per-user limit.
    LimitReached,
    /// Refused by the anti-brush limits (`429`).
    RateLimited,
    /// The inventory said the sale is over.
    Ended,
}

impl BuyMetric {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::SoldOut => "sold_out",
            Self::SoldOutLocal => "sold_out_local",
            Self::NotStarted => "not_started",
            Self::LimitReached => "limit_reached",
            Self::RateLimited => "rate_limited",
            Self::Ended => "ended",
        }
    }

    /// Counts one buy with this outcome. `sale` is `None` for a refusal before the sale is
    /// known (labelled `unknown`), so the `sale` label stays bounded by the sales that exist.
    ///
    /// Each thread keeps the counter handles it looked up once (the sale ids are those of known
    /// sales, so the set stays bounded): a refusal neither formats a label nor searches the
    /// metrics registry.
    pub fn count(self, sale: Option<i64>) {
        type Counters = HashMap<(&'static str, Option<i64>), metrics::Counter>;
        thread_local! {
            static COUNTERS: RefCell<Counters> = RefCell::new(HashMap::new());
        }
        let outcome = self.label();
        COUNTERS.with_borrow_mut(|counters| {
            counters
                .entry((outcome, sale))
                .or_insert_with(|| {
                    let sale = sale.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
                    metrics::counter!(flashsale_telemetry::metrics::BUY_OUTCOMES,
                        "outcome" => outcome, "sale" => sale)
                })
                .increment(1);
        });
    }
}

/// A buy the buy path refuses on its own account. (Rate limits and failed calls arrive as
/// [`ApiError`]s already.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The quantity is outside `1..=MAX_QUANTITY`.
    BadQuantity,
    /// The quantity is over the sale's per-user limit (answered from the cache).
    OverPerUserLimit {
        /// The sale's per-user limit.
        limit: i64,
    },
    /// No such sale: remembered missing, or the inventory said so.
    UnknownSale,
    /// Not started, answered from the cache.
    NotStartedLocal,
    /// Known sold out, answered from the cache.
    SoldOutLocal,
    /// The inventory had no stock left.
    SoldOut,
    /// The buyer already holds the per-user limit (the inventory's count).
    LimitReached {
        /// The sale's per-user limit.
        limit: i64,
    },
    /// The inventory said the sale has not started.
    NotStarted,
    /// The inventory said the sale has ended.
    Ended,
    /// The order id (user, `Idempotency-Key`) was reserved for a different request.
    KeyReused,
    /// The inventory answered without an outcome.
    NoOutcome,
}

/// One row of the refusal table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Error code.
    pub code: ErrorCode,
    /// The outcome it is counted under, if it is counted.
    pub metric: Option<BuyMetric>,
}

impl Refusal {
    /// The refusal table: status, code and metric of each refusal.
    pub const fn answer(self) -> Answer {
        use BuyMetric as M;
        use ErrorCode as C;
        let (status, code, metric) = match self {
            Self::BadQuantity => (StatusCode::UNPROCESSABLE_ENTITY, C::InvalidInput, None),
            Self::OverPerUserLimit { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, C::InvalidInput, None)
            }
            Self::UnknownSale => (StatusCode::NOT_FOUND, C::NotFound, None),
            Self::NotStartedLocal => (
                StatusCode::TOO_EARLY,
                C::SaleNotStarted,
                Some(M::NotStarted),
            ),
            Self::SoldOutLocal => (StatusCode::CONFLICT, C::SoldOut, Some(M::SoldOutLocal)),
            Self::SoldOut => (StatusCode::CONFLICT, C::SoldOut, Some(M::SoldOut)),
            Self::LimitReached { .. } => (
                StatusCode::CONFLICT,
                C::PerUserLimitReached,
                Some(M::LimitReached),
            ),
            // Not counted, unlike the local answer: as it always was.
            Self::NotStarted => (StatusCode::TOO_EARLY, C::SaleNotStarted, None),
            Self::Ended => (StatusCode::CONFLICT, C::SaleEnded, Some(M::Ended)),
            Self::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::IdempotencyKeyReused,
                None,
            ),
            Self::NoOutcome => (StatusCode::SERVICE_UNAVAILABLE, C::Unavailable, None),
        };
        Answer {
            status,
            code,
            metric,
        }
    }

    /// The message the client reads.
    pub fn message(self) -> String {
        match self {
            Self::BadQuantity => format!("quantity must be between 1 and {MAX_QUANTITY}"),
            Self::OverPerUserLimit { limit } => {
                format!("quantity exceeds the per-user limit of {limit}")
            }
            Self::UnknownSale => "no such sale".into(),
            Self::NotStartedLocal | Self::NotStarted => "the sale has not started yet".into(),
            Self::SoldOutLocal | Self::SoldOut => "sold out".into(),
            Self::LimitReached { limit } => {
                format!("you already hold the per-user limit of {limit} for this sale")
            }
            Self::Ended => "the sale has ended".into(),
            Self::KeyReused => {
                "this Idempotency-Key was already used for a different request".into()
            }
            Self::NoOutcome => ApiError::unavailable().message,
        }
    }

    /// Counts the refusal (if its row says so) under `sale` and turns it into the API error.
    pub fn refuse(self, sale: i64) -> ApiError {
        let answer = self.answer();
        if let Some(metric) = answer.metric {
            metric.count(Some(sale));
        }
        ApiError::new(answer.status, answer.code, self.message())
    }
}

/// What an inventory answer teaches this gateway's sale cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleNote {
    /// Nothing.
    Keep,
    /// No stock left: answer "sold out" locally for a while.
    MarkSoldOut,
    /// Stock left: stop answering "sold out" locally.
    ClearSoldOut,
    /// The sale does not exist: answer "no such sale" locally for a while.
    RememberMissing,
}

/// One row of the reserve table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveRow {
    /// Why the buy is refused; `None`: the stock is held for this order id.
    pub refusal: Option<Refusal>,
    /// What the sale cache learns.
    pub sale: SaleNote,
}

/// The reserve table: the inventory's `Reserve` outcome, with the stock it reported left and
/// the sale's per-user limit (for the message), → the buy's refusal and the sale cache's note.
pub const fn reserve_row(
    outcome: ReserveOutcome,
    remaining: i64,
    per_user_limit: i64,
) -> ReserveRow {
    use ReserveOutcome as O;
    use SaleNote as N;
    let empty = remaining <= 0;
    let (refusal, sale) = match outcome {
        O::Reserved | O::AlreadyReserved => (
            None,
            if empty {
                N::MarkSoldOut
            } else {
                N::ClearSoldOut
            },
        ),
        O::SoldOut => (
            Some(Refusal::SoldOut),
            if empty { N::MarkSoldOut } else { N::Keep },
        ),
        O::LimitReached => (
            Some(Refusal::LimitReached {
                limit: per_user_limit,
            }),
            if empty { N::Keep } else { N::ClearSoldOut },
        ),
        O::SaleNotFound => (Some(Refusal::UnknownSale), N::RememberMissing),
        O::NotStarted => (Some(Refusal::NotStarted), N::Keep),
        O::Ended => (Some(Refusal::Ended), N::Keep),
        O::OrderIdConflict => (Some(Refusal::KeyReused), N::Keep),
        O::Unspecified => (Some(Refusal::NoOutcome), N::Keep),
    };
    ReserveRow { refusal, sale }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, code and metric label the client and the dashboards see for each outcome.
    fn seen(
        outcome: ReserveOutcome,
        remaining: i64,
    ) -> Option<(u16, &'static str, Option<&'static str>)> {
        reserve_row(outcome, remaining, 2).refusal.map(|r| {
            let a = r.answer();
            (
                a.status.as_u16(),
                a.code.as_str(),
                a.metric.map(BuyMetric::label),
            )
        })
    }

    #[test]
    fn every_reserve_outcome_has_its_status_code_and_label() {
        use ReserveOutcome as O;
        assert_eq!(seen(O::Reserved, 5), None);
        assert_eq!(seen(O::AlreadyReserved, 0), None);
        assert_eq!(
            seen(O::SoldOut, 0),
            Some((409, "sold_out", Some("sold_out")))
        );
        assert_eq!(
            seen(O::LimitReached, 3),
            Some((409, "per_user_limit_reached", Some("limit_reached")))
        );
        assert_eq!(seen(O::SaleNotFound, 0), Some((404, "not_found", None)));
        assert_eq!(
            seen(O::NotStarted, 3),
            Some((425, "sale_not_started", None))
        );
        assert_eq!(seen(O::Ended, 3), Some((409, "sale_ended", Some("ended"))));
        assert_eq!(
            seen(O::OrderIdConflict, 3),
            Some((422, "idempotency_key_reused", None))
        );
        assert_eq!(seen(O::Unspecified, 3), Some((503, "unavailable", None)));
    }

    #[test]
    fn the_sale_cache_learns_from_the_stock_left() {
        use ReserveOutcome as O;
        use SaleNote as N;
        let note = |outcome, remaining| reserve_row(outcome, remaining, 1).sale;
        assert_eq!(note(O::Reserved, 0), N::MarkSoldOut);
        assert_eq!(note(O::AlreadyReserved, 4), N::ClearSoldOut);
        assert_eq!(note(O::SoldOut, 0), N::MarkSoldOut);
        assert_eq!(note(O::SoldOut, 1), N::Keep);
        assert_eq!(note(O::LimitReached, 0), N::Keep);
        assert_eq!(note(O::LimitReached, 1), N::ClearSoldOut);
        assert_eq!(note(O::SaleNotFound, 0), N::RememberMissing);
        for outcome in [O::NotStarted, O::Ended, O::OrderIdConflict, O::Unspecified] {
            assert_eq!(note(outcome, 0), N::Keep);
        }
    }

    #[test]
    fn local_answers_and_their_labels() {
        let row = |r: Refusal| {
            let a = r.answer();
            (
                a.status.as_u16(),
                a.code.as_str(),
                a.metric.map(BuyMetric::label),
            )
        };
        assert_eq!(
            row(Refusal::SoldOutLocal),
            (409, "sold_out", Some("sold_out_local"))
        );
        assert_eq!(
            row(Refusal::NotStartedLocal),
            (425, "sale_not_started", Some("not_started"))
        );
        assert_eq!(row(Refusal::UnknownSale), (404, "not_found", None));
        assert_eq!(row(Refusal::BadQuantity), (422, "invalid_input", None));
        assert_eq!(
            row(Refusal::OverPerUserLimit { limit: 2 }),
            (422, "invalid_input", None)
        );
        assert_eq!(BuyMetric::Accepted.label(), "accepted");
        assert_eq!(BuyMetric::RateLimited.label(), "rate_limited");
    }

    #[test]
    fn messages_are_the_ones_clients_have_seen() {
        assert_eq!(
            Refusal::LimitReached { limit: 2 }.message(),
            "you already hold the per-user limit of 2 for this sale"
        );
        assert_eq!(
            Refusal::OverPerUserLimit { limit: 2 }.message(),
            "quantity exceeds the per-user limit of 2"
        );
        assert_eq!(
            Refusal::BadQuantity.message(),
            "quantity must be between 1 and 1000000"
        );
        assert_eq!(
            Refusal::NoOutcome.message(),
            "service temporarily unavailable; retry"
        );
        let error = Refusal::Ended.refuse(7);
        assert_eq!(
            error,
            ApiError::conflict(ErrorCode::SaleEnded, "the sale has ended")
        );
    }
}
