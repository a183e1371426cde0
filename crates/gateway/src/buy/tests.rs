//! The buy flow against a fake upstream that answers from memory and counts every call: what
//! is charged, what reaches the inventory, what is remembered and queued — no servers.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use flashsale_proto::{
    inventory::{ReserveOutcome, ReserveReply, ReserveRequest, Sale},
    order::SubmitRequest,
};

use super::*;
use crate::{
    error::{ApiError, ErrorCode},
    sales_cache::SaleCache,
};

const NOW: i64 = 1_700_000_000_000;
const SALE: i64 = 7;

/// An upstream answering from memory.
struct Fake {
    sale: Option<Sale>,
    reserve: ReserveReply,
    refuse_charge: bool,
    fail_submit: bool,
    fetches: AtomicUsize,
    charges: AtomicUsize,
    reserves: Mutex<Vec<ReserveRequest>>,
    submits: Mutex<Vec<SubmitRequest>>,
}

impl Fake {
    /// A sale open since an hour, 2 per user, 99.00 each; reserves succeed with stock left.
    fn new() -> Self {
        Self {
            sale: Some(Sale {
                id: SALE,
                per_user_limit: 2,
                price_cents: 9_900,
                starts_at_ms: NOW - 3_600_000,
                ends_at_ms: NOW + 3_600_000,
                ..Default::default()
            }),
            reserve: reply(ReserveOutcome::Reserved, 10),
            refuse_charge: false,
            fail_submit: false,
            fetches: AtomicUsize::new(0),
            charges: AtomicUsize::new(0),
            reserves: Mutex::new(Vec::new()),
            submits: Mutex::new(Vec::new()),
        }
    }

    fn charges(&self) -> usize {
        self.charges.load(Ordering::SeqCst)
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
    fn reserves(&self) -> usize {
        self.reserves.lock().unwrap().len()
    }
    fn submits(&self) -> Vec<SubmitRequest> {
        self.submits.lock().unwrap().clone()
    }
}

fn reply(outcome: ReserveOutcome, remaining: i64) -> ReserveReply {
    ReserveReply {
        outcome: outcome.into(),
        remaining,
        price_cents: 9_900,
    }
}

impl BuyUpstream for Fake {
    async fn fetch_sale(&self, _sale_id: i64) -> Result<Option<Sale>, ApiError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(self.sale.clone())
    }

    async fn charge(&self, _ip: IpAddr, _user: i64, _sale: i64) -> Result<(), ApiError> {
        self.charges.fetch_add(1, Ordering::SeqCst);
        if self.refuse_charge {
            Err(ApiError::rate_limited(1))
        } else {
            Ok(())
        }
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<ReserveReply, ApiError> {
        self.reserves.lock().unwrap().push(request);
        Ok(self.reserve)
    }

    async fn submit(&self, request: SubmitRequest) -> Result<(), ApiError> {
        self.submits.lock().unwrap().push(request);
        if self.fail_submit {
            Err(ApiError::timeout())
        } else {
            Ok(())
        }
    }
}

/// The gateway's memory, empty.
struct Memory {
    sales: SaleCache,
    accepted: AcceptedOrders,
}

impl Memory {
    fn new() -> Self {
        Self {
            sales: SaleCache::new(
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ),
            accepted: accepted_orders(),
        }
    }

    fn view(&self) -> BuyMemory<'_> {
        BuyMemory {
            sales: &self.sales,
            accepted: &self.accepted,
        }
    }

    /// Caches `fake`'s sale, as a `GET /sales/{id}` would have.
    async fn knows(&self, fake: &Fake) {
        if let Some(sale) = &fake.sale {
            self.sales.remember(sale).await;
        }
    }

    /// Marks the sale sold out, as an inventory answer with no stock left would have.
    async fn sold_out(&self) {
        let sale = self
            .sales
            .get_or_fetch(SALE, async { Ok(None) })
            .await
            .unwrap()
            .expect("the sale is cached");
        self.sales.mark_sold_out(&sale, NOW);
    }
}

fn input(key: &str, quantity: i64) -> BuyInput {
    BuyInput {
        user_id: 42,
        client_ip: IpAddr::from([10, 0, 0, 1]),
        sale_id: SALE,
        idempotency_key: key.into(),
        quantity,
        accepted_at_ms: NOW,
    }
}

fn assert_refused(result: Result<uuid::Uuid, ApiError>, status: u16, code: ErrorCode) -> ApiError {
    let error = result.expect_err("refused");
    assert_eq!(
        (error.status.as_u16(), error.code),
        (status, code),
        "{error:?}"
    );
    error
}

#[tokio::test]
async fn an_accepted_buy_is_remembered_and_submitted() {
    let (memory, fake) = (Memory::new(), Fake::new());
    let order_id = buy(memory.view(), &fake, input("k1", 2)).await.unwrap();

    assert_eq!(order_id, order_id_for(42, "k1"));
    assert!(memory.accepted.contains_key(&order_id.as_u128()));
    let reserved = fake.reserves.lock().unwrap().clone();
    assert_eq!(
        reserved,
        [ReserveRequest {
            order_id: order_id.to_string(),
            sale_id: SALE,
            user_id: 42,
            quantity: 2,
        }]
    );
    let submitted = fake.submits();
    assert_eq!(submitted.len(), 1);
    let order = submitted[0].order.clone().unwrap();
    assert_eq!(order.order_id, order_id.to_string());
    assert_eq!(
        (
            order.user_id,
            order.sale_id,
            order.quantity,
            order.price_cents
        ),
        (42, SALE, 2, 9_900)
    );
    assert_eq!(order.idempotency_key, "k1");
    assert_eq!(order.accepted_at_ms, NOW);
    assert_eq!(fake.charges(), 1, "charged once");
}

#[tokio::test]
async fn an_accepted_order_id_is_remembered_before_it_is_queued() {
    let memory = Memory::new();
    let fake = Fake {
        fail_submit: true,
        ..Fake::new()
    };
    let error = buy(memory.view(), &fake, input("k1", 1)).await.unwrap_err();
    assert_eq!(error, ApiError::timeout());
    assert!(memory
        .accepted
        .contains_key(&order_id_for(42, "k1").as_u128()));

    // Its retry reaches the inventory even once the sale is known sold out here.
    memory.sold_out().await;
    let fake = Fake {
        reserve: reply(ReserveOutcome::AlreadyReserved, 0),
        ..Fake::new()
    };
    buy(memory.view(), &fake, input("k1", 1)).await.unwrap();
    assert_eq!(fake.reserves(), 1);
    // Another buy is answered locally.
    let result = buy(memory.view(), &fake, input("k2", 1)).await;
    assert_refused(result, 409, ErrorCode::SoldOut);
    assert_eq!(fake.reserves(), 1);
}

#[tokio::test]
async fn a_sale_known_sold_out_is_answered_locally_without_a_reserve_or_a_charge() {
    let (memory, fake) = (Memory::new(), Fake::new());
    memory.knows(&fake).await;
    memory.sold_out().await;

    let error = assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        409,
        ErrorCode::SoldOut,
    );
    assert_eq!(error.message, "sold out");
    assert_eq!(fake.reserves(), 0, "no reserve call");
    assert_eq!(fake.charges(), 0, "not charged");
    assert_eq!(fake.fetches(), 0, "no lookup");
}

#[tokio::test]
async fn the_inventorys_sold_out_is_then_answered_locally() {
    let memory = Memory::new();
    let fake = Fake {
        reserve: reply(ReserveOutcome::SoldOut, 0),
        ..Fake::new()
    };
    assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        409,
        ErrorCode::SoldOut,
    );
    assert_refused(
        buy(memory.view(), &fake, input("k2", 1)).await,
        409,
        ErrorCode::SoldOut,
    );
    assert_eq!(fake.reserves(), 1, "the second one answered locally");
    assert_eq!(fake.charges(), 1, "and not charged");
}

#[tokio::test]
async fn an_unknown_sale_is_charged_once_then_answered_locally() {
    let memory = Memory::new();
    let fake = Fake {
        sale: None,
        ..Fake::new()
    };
    let error = assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        404,
        ErrorCode::NotFound,
    );
    assert_eq!(error.message, "no such sale");
    assert_eq!(
        (fake.charges(), fake.fetches()),
        (1, 1),
        "charged before its lookup"
    );

    // Remembered missing: answered from memory, not charged again.
    assert_refused(
        buy(memory.view(), &fake, input("k2", 1)).await,
        404,
        ErrorCode::NotFound,
    );
    assert_eq!((fake.charges(), fake.fetches(), fake.reserves()), (1, 1, 0));
}

#[tokio::test]
async fn a_refused_charge_stops_the_buy_before_the_lookup_or_the_reserve() {
    let memory = Memory::new();
    let fake = Fake {
        refuse_charge: true,
        ..Fake::new()
    };
    // Not cached: refused before the lookup.
    let error = assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        429,
        ErrorCode::RateLimited,
    );
    assert_eq!(error.retry_after_secs, Some(1));
    assert_eq!((fake.fetches(), fake.reserves()), (0, 0));

    // Cached: refused after the local answers, before the reserve.
    memory.knows(&fake).await;
    assert_refused(
        buy(memory.view(), &fake, input("k2", 1)).await,
        429,
        ErrorCode::RateLimited,
    );
    assert_eq!((fake.charges(), fake.reserves()), (2, 0));
}

#[tokio::test]
async fn quantities_outside_the_bounds_or_over_the_per_user_limit_are_refused() {
    let (memory, fake) = (Memory::new(), Fake::new());
    for quantity in [0, -1, MAX_QUANTITY + 1] {
        let error = assert_refused(
            buy(memory.view(), &fake, input("k", quantity)).await,
            422,
            ErrorCode::InvalidInput,
        );
        assert_eq!(error.message, "quantity must be between 1 and 1000000");
    }
    assert_eq!(
        (fake.charges(), fake.fetches()),
        (0, 0),
        "refused before anything"
    );

    memory.knows(&fake).await;
    let error = assert_refused(
        buy(memory.view(), &fake, input("k", 3)).await,
        422,
        ErrorCode::InvalidInput,
    );
    assert_eq!(error.message, "quantity exceeds the per-user limit of 2");
    assert_eq!((fake.charges(), fake.reserves()), (0, 0), "a local answer");
}

#[tokio::test]
async fn a_sale_not_started_is_answered_locally() {
    let memory = Memory::new();
    let mut fake = Fake::new();
    if let Some(sale) = &mut fake.sale {
        sale.starts_at_ms = NOW + 60_000;
    }
    memory.knows(&fake).await;
    let error = assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        425,
        ErrorCode::SaleNotStarted,
    );
    assert_eq!(error.message, "the sale has not started yet");
    assert_eq!((fake.charges(), fake.reserves()), (0, 0));
}

#[tokio::test]
async fn every_reserve_outcome_is_answered_as_its_row_says() {
    use ReserveOutcome as O;
    let cases = [
        (O::Reserved, 202, None),
        (O::AlreadyReserved, 202, None),
        (O::SoldOut, 409, Some(ErrorCode::SoldOut)),
        (O::LimitReached, 409, Some(ErrorCode::PerUserLimitReached)),
        (O::SaleNotFound, 404, Some(ErrorCode::NotFound)),
        (O::NotStarted, 425, Some(ErrorCode::SaleNotStarted)),
        (O::Ended, 409, Some(ErrorCode::SaleEnded)),
        (
            O::OrderIdConflict,
            422,
            Some(ErrorCode::IdempotencyKeyReused),
        ),
        (O::Unspecified, 503, Some(ErrorCode::Unavailable)),
    ];
    for (outcome, status, code) in cases {
        let memory = Memory::new();
        let fake = Fake {
            reserve: reply(outcome, 0),
            ..Fake::new()
        };
        let result = buy(memory.view(), &fake, input("k", 1)).await;
        let remembered = memory
            .accepted
            .contains_key(&order_id_for(42, "k").as_u128());
        match code {
            None => {
                assert!(result.is_ok(), "{outcome:?}: {result:?}");
                assert_eq!(fake.submits().len(), 1, "{outcome:?} queued");
                assert!(remembered, "{outcome:?} remembered");
            }
            Some(code) => {
                let error = result.expect_err("refused");
                assert_eq!(
                    (error.status.as_u16(), error.code),
                    (status, code),
                    "{outcome:?}"
                );
                assert!(fake.submits().is_empty(), "{outcome:?} not queued");
                assert!(!remembered, "{outcome:?} not remembered");
            }
        }
    }
}

#[tokio::test]
async fn an_inventory_not_found_is_remembered() {
    let memory = Memory::new();
    let fake = Fake {
        reserve: reply(ReserveOutcome::SaleNotFound, 0),
        ..Fake::new()
    };
    assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        404,
        ErrorCode::NotFound,
    );
    assert_refused(
        buy(memory.view(), &fake, input("k2", 1)).await,
        404,
        ErrorCode::NotFound,
    );
    assert_eq!(fake.reserves(), 1, "the second answered from memory");
}

#[tokio::test]
async fn a_limit_reached_names_the_limit() {
    let memory = Memory::new();
    let fake = Fake {
        reserve: reply(ReserveOutcome::LimitReached, 3),
        ..Fake::new()
    };
    let error = assert_refused(
        buy(memory.view(), &fake, input("k1", 1)).await,
        409,
        ErrorCode::PerUserLimitReached,
    );
    assert_eq!(
        error.message,
        "you already hold the per-user limit of 2 for this sale"
    );
}

#[tokio::test]
async fn a_last_unit_reserved_makes_the_sale_sold_out_here() {
    let memory = Memory::new();
    let fake = Fake {
        reserve: reply(ReserveOutcome::Reserved, 0),
        ..Fake::new()
    };
    buy(memory.view(), &fake, input("k1", 1)).await.unwrap();
    assert_refused(
        buy(memory.view(), &fake, input("k2", 1)).await,
        409,
        ErrorCode::SoldOut,
    );
    assert_eq!(fake.reserves(), 1);
}
