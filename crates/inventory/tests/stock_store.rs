//! The `StockStore` conformance suite: one set of cases, run against every backend.
//!
//! Each case below is an async function over an `Arc<dyn StockStore>`; [`conformance!`] turns
//! it into a `memory::<case>` test (always runs) and a `redis::<case>` test (against the local
//! Redis under a key prefix of its own, skipped with a message when there is none unless
//! `CI=true`). [`MemoryStock`] is the reference: both must decide alike. The Redis-only cases at
//! the end cover what only a shared backend has: several inventory instances on one Redis, a
//! build in progress or abandoned, state partly lost under the service.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::with_redis;
use flashsale_inventory::{
    catalog::StoredReservation,
    sale::Sale,
    stock::{MemoryStock, RedisStock, ReserveDecision, ReserveOutcome, ReserveRequest, StockStore},
};
use flashsale_redis::{testing::TestRedis, Redis};

type Store = Arc<dyn StockStore>;

/// Opening time of every sale (a realistic Unix ms, far above 2^31).
const START: i64 = 1_700_000_000_000;
/// Closing time.
const END: i64 = START + 3_600_000;
/// Decision time of requests unless said otherwise.
const NOW: i64 = START + 1_000;

fn sale(id: i64, stock: i64, per_user_limit: i64) -> Sale {
    Sale {
        id,
        name: format!("sale {id}"),
        price_cents: 100,
        stock,
        per_user_limit,
        starts_at_ms: START,
        ends_at_ms: END,
    }
}

fn req(sale_id: i64, order: u128, user_id: i64, quantity: i64) -> ReserveRequest {
    ReserveRequest {
        order,
        sale_id,
        user_id,
        quantity,
        now_ms: NOW,
    }
}

fn at(now_ms: i64, request: ReserveRequest) -> ReserveRequest {
    ReserveRequest { now_ms, ..request }
}

fn stored(
    order: u128,
    sale_id: i64,
    user_id: i64,
    quantity: i64,
    released: bool,
) -> StoredReservation {
    StoredReservation {
        order_id: uuid::Uuid::from_u128(order).to_string(),
        sale_id,
        user_id,
        quantity,
        released,
    }
}

async fn reserve(store: &Store, request: ReserveRequest) -> ReserveDecision {
    store.reserve(request).await.unwrap()
}

async fn outcome(store: &Store, request: ReserveRequest) -> ReserveOutcome {
    reserve(store, request).await.outcome
}

async fn sorted_unconfirmed(store: &Store, before_ms: i64) -> Vec<u128> {
    let mut due = store.unconfirmed(before_ms).await.unwrap();
    due.sort_unstable();
    due
}

fn decision(outcome: ReserveOutcome, remaining: i64) -> ReserveDecision {
    ReserveDecision { outcome, remaining }
}

// ---------------------------------------------------------------------------------------------
// The cases, shared by every backend.
// ---------------------------------------------------------------------------------------------

async fn same_order_id_reserves_once(store: Store) {
    use ReserveOutcome::*;
    assert!(store.load(&sale(1, 5, 5), &[]).await.unwrap());
    assert!(store.load(&sale(2, 5, 5), &[]).await.unwrap());
    assert_eq!(
        reserve(&store, req(1, 7, 1, 2)).await,
        decision(Reserved, 3)
    );
    assert_eq!(
        reserve(&store, req(1, 7, 1, 2)).await,
        decision(AlreadyReserved, 3),
        "a retry takes nothing"
    );
    assert_eq!(
        reserve(&store, req(1, 7, 1, 3)).await,
        decision(Conflict, 3)
    );
    assert_eq!(
        reserve(&store, req(1, 7, 2, 2)).await,
        decision(Conflict, 3)
    );
    assert_eq!(
        reserve(&store, req(2, 7, 1, 2)).await,
        decision(Conflict, 5),
        "another sale's remaining is reported"
    );
    // Already reserved is answered even outside the window or when sold out.
    assert_eq!(
        outcome(&store, at(END, req(1, 7, 1, 2))).await,
        AlreadyReserved
    );
    assert_eq!(outcome(&store, req(1, 8, 2, 3)).await, Reserved);
    assert_eq!(
        reserve(&store, req(1, 7, 1, 2)).await,
        decision(AlreadyReserved, 0)
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(0));
    assert_eq!(store.remaining(2).await.unwrap(), Some(5));
}

async fn window_is_enforced(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 5, 5), &[]).await.unwrap();
    assert_eq!(
        reserve(&store, at(START - 1, req(1, 1, 1, 1))).await,
        decision(NotStarted, 5)
    );
    assert_eq!(
        reserve(&store, at(END, req(1, 1, 1, 1))).await,
        decision(Ended, 5)
    );
    assert_eq!(outcome(&store, at(END + 1, req(1, 1, 1, 1))).await, Ended);
    assert_eq!(outcome(&store, at(START, req(1, 1, 1, 1))).await, Reserved);
    assert_eq!(
        reserve(&store, at(END - 1, req(1, 2, 2, 1))).await,
        decision(Reserved, 3)
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(3));
}

async fn sold_out_takes_nothing(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 3, 3), &[]).await.unwrap();
    assert_eq!(
        reserve(&store, req(1, 1, 1, 2)).await,
        decision(Reserved, 1)
    );
    assert_eq!(reserve(&store, req(1, 2, 2, 2)).await, decision(SoldOut, 1));
    assert_eq!(
        reserve(&store, req(1, 3, 2, 1)).await,
        decision(Reserved, 0)
    );
    assert_eq!(reserve(&store, req(1, 4, 3, 1)).await, decision(SoldOut, 0));
    // A refused order id is not held: it may reserve once stock is back.
    assert!(store.release(1).await.unwrap());
    assert_eq!(
        reserve(&store, req(1, 2, 2, 2)).await,
        decision(Reserved, 0)
    );
}

async fn per_user_limit_is_enforced(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 10, 2), &[]).await.unwrap();
    assert_eq!(
        reserve(&store, req(1, 1, 1, 3)).await,
        decision(LimitReached, 10)
    );
    assert_eq!(outcome(&store, req(1, 2, 1, 1)).await, Reserved);
    assert_eq!(outcome(&store, req(1, 3, 1, 1)).await, Reserved);
    assert_eq!(
        reserve(&store, req(1, 4, 1, 1)).await,
        decision(LimitReached, 8)
    );
    assert_eq!(
        outcome(&store, req(1, 5, 2, 2)).await,
        Reserved,
        "others unaffected"
    );
    // Released units no longer count against the user.
    assert!(store.release(2).await.unwrap());
    assert_eq!(outcome(&store, req(1, 4, 1, 1)).await, Reserved);
    assert_eq!(outcome(&store, req(1, 6, 1, 1)).await, LimitReached);
    assert_eq!(store.remaining(1).await.unwrap(), Some(6));
}

async fn release_gives_stock_back_once(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 5, 5), &[]).await.unwrap();
    assert_eq!(outcome(&store, req(1, 1, 1, 2)).await, Reserved);
    assert_eq!(store.remaining(1).await.unwrap(), Some(3));
    assert!(store.release(1).await.unwrap());
    assert!(!store.release(1).await.unwrap(), "released twice");
    assert_eq!(store.remaining(1).await.unwrap(), Some(5));
    // A released order id stays spent: a replay does not take stock again.
    assert_eq!(
        reserve(&store, req(1, 1, 1, 2)).await,
        decision(AlreadyReserved, 5)
    );
    assert!(!store.release(1).await.unwrap());
    assert!(!store.release(42).await.unwrap(), "unknown order");
    assert_eq!(store.remaining(1).await.unwrap(), Some(5));
    assert_eq!(
        store.unconfirmed(i64::MAX).await.unwrap(),
        Vec::<u128>::new()
    );
}

async fn void_only_drops_old_unconfirmed_holds(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 3, 3), &[]).await.unwrap();
    assert_eq!(outcome(&store, req(1, 1, 1, 1)).await, Reserved);
    assert_eq!(outcome(&store, req(1, 2, 2, 1)).await, Reserved);
    assert_eq!(outcome(&store, req(1, 3, 3, 1)).await, Reserved);
    store.confirm(&[2]).await.unwrap();
    assert!(store.release(3).await.unwrap());
    assert!(
        !store.void(1, NOW - 1).await.unwrap(),
        "touched after the cutoff"
    );
    assert!(
        !store.void(2, NOW).await.unwrap(),
        "confirmed holds are never voided"
    );
    assert!(
        !store.void(3, NOW).await.unwrap(),
        "released holds are not voided"
    );
    assert!(!store.void(99, NOW).await.unwrap(), "unknown order");
    assert_eq!(store.remaining(1).await.unwrap(), Some(1));
    assert!(store.void(1, NOW).await.unwrap());
    assert!(!store.void(1, NOW).await.unwrap(), "voided twice");
    assert_eq!(store.remaining(1).await.unwrap(), Some(2));
    assert_eq!(
        sorted_unconfirmed(&store, i64::MAX).await,
        Vec::<u128>::new()
    );
    // A retry of the voided order id reserves afresh (even as another quantity). (A release
    // of it would have spent it: see `a_release_before_the_rebuild_is_honoured`.)
    assert_eq!(
        reserve(&store, req(1, 1, 1, 2)).await,
        decision(Reserved, 0)
    );
    // A retry restarts the grace period.
    let later = NOW + 500;
    assert_eq!(
        outcome(&store, at(later, req(1, 1, 1, 2))).await,
        AlreadyReserved
    );
    assert!(!store.void(1, later - 1).await.unwrap());
    assert!(store.void(1, later).await.unwrap());
    assert_eq!(store.remaining(1).await.unwrap(), Some(2));
}

async fn unconfirmed_filters_by_last_touch(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 10, 10), &[]).await.unwrap();
    for (order, t) in [(1, NOW), (2, NOW + 10), (3, NOW + 20), (4, NOW + 30)] {
        assert_eq!(outcome(&store, at(t, req(1, order, 1, 1))).await, Reserved);
    }
    assert_eq!(
        sorted_unconfirmed(&store, NOW - 1).await,
        Vec::<u128>::new()
    );
    assert_eq!(sorted_unconfirmed(&store, NOW).await, vec![1]);
    assert_eq!(sorted_unconfirmed(&store, NOW + 19).await, vec![1, 2]);
    assert_eq!(sorted_unconfirmed(&store, NOW + 30).await, vec![1, 2, 3, 4]);
    // A retry moves a hold later; confirmed and released ones leave.
    assert_eq!(
        outcome(&store, at(NOW + 40, req(1, 1, 1, 1))).await,
        AlreadyReserved
    );
    store.confirm(&[2, 77]).await.unwrap();
    store.confirm(&[]).await.unwrap();
    assert!(store.release(3).await.unwrap());
    assert_eq!(sorted_unconfirmed(&store, NOW + 30).await, vec![4]);
    assert_eq!(sorted_unconfirmed(&store, NOW + 40).await, vec![1, 4]);
    // Order ids keep all 128 bits.
    let big = u128::MAX - 5;
    assert_eq!(
        outcome(&store, at(NOW + 50, req(1, big, 2, 1))).await,
        Reserved
    );
    assert_eq!(sorted_unconfirmed(&store, i64::MAX).await, vec![1, 4, big]);
    assert!(!store.void(7, NOW + 50).await.unwrap());
}

async fn confirm_takes_many_orders_at_once(store: Store) {
    use ReserveOutcome::*;
    store.load(&sale(1, 2_000, 2_000), &[]).await.unwrap();
    let orders: Vec<u128> = (1..=1_200).collect();
    for &order in &orders {
        assert_eq!(outcome(&store, req(1, order, 1, 1)).await, Reserved);
    }
    store.confirm(&orders[..1_100]).await.unwrap();
    assert_eq!(sorted_unconfirmed(&store, NOW).await, orders[1_100..]);
    assert!(!store.void(5, NOW).await.unwrap());
    assert!(store.void(1_150, NOW).await.unwrap());
}

async fn load_skips_a_tracked_sale(store: Store) {
    use ReserveOutcome::*;
    assert!(store
        .load(&sale(1, 5, 2), &[stored(1, 1, 1, 2, false)])
        .await
        .unwrap());
    assert_eq!(outcome(&store, req(1, 2, 2, 1)).await, Reserved);
    // A second instance starting, with another view of the reservations: nothing changes.
    let other = [stored(3, 1, 3, 2, false), stored(1, 1, 1, 1, true)];
    assert!(!store.load(&sale(1, 50, 2), &other).await.unwrap());
    assert_eq!(store.remaining(1).await.unwrap(), Some(2));
    assert_eq!(outcome(&store, req(1, 1, 1, 2)).await, AlreadyReserved);
    assert_eq!(
        outcome(&store, req(1, 4, 1, 1)).await,
        LimitReached,
        "limit still 2"
    );
    assert_eq!(
        outcome(&store, req(1, 3, 5, 1)).await,
        Reserved,
        "order 3 of the second list was never loaded"
    );
    assert_eq!(
        sorted_unconfirmed(&store, i64::MAX).await,
        vec![2, 3],
        "the unconfirmed hold survives"
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(1));
}

async fn load_rebuilds_from_stored_reservations(store: Store) {
    use ReserveOutcome::*;
    let reservations = [
        stored(1, 1, 1, 2, false),
        stored(2, 1, 2, 1, true),
        stored(3, 2, 2, 1, false), // another sale
        stored(4, 1, 3, 1, false),
    ];
    let mut bad = stored(5, 1, 4, 1, false);
    bad.order_id = "not-a-uuid".into();
    let mut all = reservations.to_vec();
    all.push(bad);
    assert!(store.load(&sale(1, 5, 2), &all).await.unwrap());
    assert_eq!(
        store.remaining(1).await.unwrap(),
        Some(2),
        "released ones hold nothing"
    );
    assert_eq!(
        store.remaining(2).await.unwrap(),
        None,
        "only the loaded sale is tracked"
    );
    assert_eq!(outcome(&store, req(1, 9, 1, 1)).await, LimitReached);
    assert_eq!(
        outcome(&store, req(1, 9, 2, 2)).await,
        Reserved,
        "user 2's units went back"
    );
    assert_eq!(outcome(&store, req(1, 2, 2, 1)).await, AlreadyReserved);
    assert_eq!(outcome(&store, req(1, 1, 1, 2)).await, AlreadyReserved);
    assert_eq!(outcome(&store, req(1, 1, 1, 1)).await, Conflict);
    // Stored reservations start confirmed: never voided, not listed.
    assert_eq!(sorted_unconfirmed(&store, i64::MAX).await, vec![9]);
    assert!(!store.void(1, i64::MAX).await.unwrap());
    assert!(store.release(1).await.unwrap());
    assert!(
        !store.release(2).await.unwrap(),
        "already released in the database"
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(2));
    assert_eq!(outcome(&store, req(1, 10, 1, 2)).await, Reserved);
    assert_eq!(store.remaining(1).await.unwrap(), Some(0));
}

async fn unknown_sale_is_not_found(store: Store) {
    use ReserveOutcome::*;
    assert_eq!(
        reserve(&store, req(9, 1, 1, 1)).await,
        decision(NotFound, 0)
    );
    assert_eq!(store.remaining(9).await.unwrap(), None);
    store.load(&sale(1, 5, 5), &[]).await.unwrap();
    assert_eq!(
        reserve(&store, req(9, 1, 1, 1)).await,
        decision(NotFound, 0)
    );
    assert_eq!(store.remaining(9).await.unwrap(), None);
    // Read together, each sale answers as it does alone, in order.
    store.load(&sale(2, 7, 5), &[]).await.unwrap();
    assert_eq!(
        store.remaining_many(&[2, 9, 1]).await.unwrap(),
        vec![Some(7), None, Some(5)]
    );
    assert_eq!(
        store.remaining_many(&[]).await.unwrap(),
        Vec::<Option<i64>>::new()
    );
    assert!(!store.release(2).await.unwrap());
    assert!(!store.void(1, i64::MAX).await.unwrap());
    store.confirm(&[1, 2]).await.unwrap();
    assert_eq!(
        store.unconfirmed(i64::MAX).await.unwrap(),
        Vec::<u128>::new()
    );
    // Nothing was recorded for the refused order id.
    assert_eq!(outcome(&store, req(1, 1, 1, 1)).await, Reserved);
}

/// 64 tasks making 5,120 reserve attempts over 300 users on the given stores (one stock), while
/// a reader polls `remaining`: exactly the stock is sold, nobody above the limit, never below 0.
/// With `batch` > 1 each task sends its attempts `batch` at a time through `reserve_many`.
async fn race_for_the_stock(stores: Vec<Store>, sale_id: i64, batch: usize) {
    const STOCK: i64 = 100;
    const LIMIT: i64 = 2;
    const TASKS: usize = 64;
    const ATTEMPTS: usize = 80;
    const USERS: usize = 300;
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, done, reads) = (
            Arc::clone(&stores[0]),
            Arc::clone(&done),
            Arc::clone(&reads),
        );
        tokio::spawn(async move {
            loop {
                let finished = done.load(Ordering::Acquire);
                let remaining = store.remaining(sale_id).await.unwrap().unwrap();
                assert!((0..=STOCK).contains(&remaining), "remaining {remaining}");
                reads.fetch_add(1, Ordering::Relaxed);
                if finished {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&stores[t % stores.len()]);
        tasks.spawn(async move {
            let mut won = Vec::new();
            let requests: Vec<ReserveRequest> = (0..ATTEMPTS)
                .map(|i| {
                    let n = t * ATTEMPTS + i;
                    let user = i64::try_from((n * 7_919) % USERS).unwrap() + 1;
                    let quantity = if n.is_multiple_of(3) { 2 } else { 1 };
                    let order = (u128::try_from(sale_id).unwrap() << 64) | (n as u128 + 1);
                    req(sale_id, order, user, quantity)
                })
                .collect();
            for chunk in requests.chunks(batch) {
                let decisions = if batch == 1 {
                    vec![store.reserve(chunk[0]).await.unwrap()]
                } else {
                    store.reserve_many(chunk).await.unwrap()
                };
                assert_eq!(decisions.len(), chunk.len());
                for (r, d) in chunk.iter().zip(decisions) {
                    assert!((0..=STOCK).contains(&d.remaining), "{d:?}");
                    match d.outcome {
                        ReserveOutcome::Reserved => won.push((r.user_id, r.quantity)),
                        ReserveOutcome::SoldOut | ReserveOutcome::LimitReached => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            won
        });
    }
    let mut by_user: HashMap<i64, i64> = HashMap::new();
    while let Some(won) = tasks.join_next().await {
        for (user, quantity) in won.unwrap() {
            *by_user.entry(user).or_default() += quantity;
        }
    }
    done.store(true, Ordering::Release);
    reader.await.unwrap();
    assert_eq!(
        by_user.values().sum::<i64>(),
        STOCK,
        "exactly the stock is sold"
    );
    assert!(
        by_user.values().all(|&units| units <= LIMIT),
        "a user above the limit: {by_user:?}"
    );
    for store in &stores {
        assert_eq!(store.remaining(sale_id).await.unwrap(), Some(0));
    }
    assert!(
        reads.load(Ordering::Relaxed) > 1,
        "the reader ran during the race"
    );
}

async fn concurrent_reserves_never_oversell(store: Store) {
    store.load(&sale(1, 100, 2), &[]).await.unwrap();
    race_for_the_stock(vec![store], 1, 1).await;
}

/// The same race with every attempt sent in batches of 16 (a gateway batching its buyers).
async fn concurrent_batches_never_oversell(store: Store) {
    store.load(&sale(1, 100, 2), &[]).await.unwrap();
    race_for_the_stock(vec![store], 1, 16).await;
}

/// A batch is decided in its order, each item exactly as a lone reserve would be: later items
/// see what earlier ones took (stock, the buyer's limit, the same order id twice).
async fn reserve_many_decides_in_order(store: Store) {
    use ReserveOutcome::*;
    assert!(store.load(&sale(1, 5, 2), &[]).await.unwrap());
    assert!(store.load(&sale(2, 9, 9), &[]).await.unwrap());
    assert_eq!(store.reserve_many(&[]).await.unwrap(), vec![]);
    let batch = [
        req(1, 1, 1, 2),                // user 1 takes 2 of 5
        req(1, 1, 1, 2),                // the same order again: takes nothing
        req(1, 2, 1, 1),                // user 1 is at the limit of 2
        req(1, 1, 2, 2),                // order 1 is user 1's: conflict
        req(1, 3, 2, 2),                // user 2 takes 2: 1 left
        req(1, 4, 3, 2),                // 2 > 1 left
        req(2, 5, 3, 3),                // another sale in the same batch
        at(START - 1, req(1, 6, 4, 1)), // not open yet
        req(99, 7, 4, 1),               // not tracked
        req(1, 8, 4, 1),                // the last unit
    ];
    let decisions = store.reserve_many(&batch).await.unwrap();
    assert_eq!(
        decisions,
        vec![
            decision(Reserved, 3),
            decision(AlreadyReserved, 3),
            decision(LimitReached, 3),
            decision(Conflict, 3),
            decision(Reserved, 1),
            decision(SoldOut, 1),
            decision(Reserved, 6),
            decision(NotStarted, 1),
            decision(NotFound, 0),
            decision(Reserved, 0),
        ]
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(0));
    assert_eq!(store.remaining(2).await.unwrap(), Some(6));
    // What a batch reserved is held like any reserve: released once, back into the stock.
    assert!(store.release(1).await.unwrap());
    assert!(!store.release(1).await.unwrap());
    assert_eq!(store.remaining(1).await.unwrap(), Some(2));
}

/// Eight tasks each release the same 50 orders: the stock comes back exactly once.
async fn release_all(stores: Vec<Store>, sale_id: i64) {
    let orders: Arc<Vec<u128>> = Arc::new((1..=50).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (store, orders) = (Arc::clone(&stores[t % stores.len()]), Arc::clone(&orders));
        tasks.spawn(async move {
            let mut released = 0;
            // Each task walks the orders from another starting point.
            for i in 0..orders.len() {
                let order = orders[(i + t * 7) % orders.len()];
                released += usize::from(store.release(order).await.unwrap());
            }
            released
        });
    }
    let mut released = 0;
    while let Some(n) = tasks.join_next().await {
        released += n.unwrap();
    }
    assert_eq!(released, 50, "one release per order wins");
    assert_eq!(stores[0].remaining(sale_id).await.unwrap(), Some(100));
}

async fn concurrent_releases_give_back_once(store: Store) {
    store.load(&sale(1, 100, 100), &[]).await.unwrap();
    for order in 1..=50 {
        assert_eq!(
            outcome(&store, req(1, order, i64::try_from(order).unwrap(), 1)).await,
            ReserveOutcome::Reserved
        );
    }
    assert_eq!(store.remaining(1).await.unwrap(), Some(50));
    release_all(vec![store], 1).await;
}

/// `count` stored reservations of one unit each by distinct users; every tenth released.
fn many_reservations(sale_id: i64, count: u128) -> Vec<StoredReservation> {
    (1..=count)
        .map(|n| {
            stored(
                n,
                sale_id,
                i64::try_from(n).unwrap(),
                1,
                n.is_multiple_of(10),
            )
        })
        .collect()
}

/// Eight concurrent loads of one sale over the given stores: exactly one builds it.
async fn load_concurrently(stores: Vec<Store>) {
    let reservations = Arc::new(many_reservations(1, 2_500));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (store, reservations) = (
            Arc::clone(&stores[t % stores.len()]),
            Arc::clone(&reservations),
        );
        tasks.spawn(async move {
            let loaded = store.load(&sale(1, 3_000, 2), &reservations).await.unwrap();
            // Whoever returns finds the sale complete.
            assert_eq!(store.remaining(1).await.unwrap(), Some(750));
            loaded
        });
    }
    let mut built = 0;
    while let Some(loaded) = tasks.join_next().await {
        built += usize::from(loaded.unwrap());
    }
    assert_eq!(built, 1, "exactly one load builds the sale");
    for store in &stores {
        assert_eq!(store.remaining(1).await.unwrap(), Some(750));
        assert_eq!(
            outcome(store, req(1, 2_500, 2_500, 1)).await,
            ReserveOutcome::AlreadyReserved
        );
    }
}

async fn concurrent_loads_build_once(store: Store) {
    load_concurrently(vec![store]).await;
}

async fn adopt_audit_and_void_absent_keep_counters_and_holds_in_step(store: Store) {
    use flashsale_inventory::stock::{AdoptOutcome::*, HeldFix, LiveHold};
    let s = sale(1, 10, 3);
    assert!(store.load(&s, &[stored(1, 1, 1, 2, false)]).await.unwrap());
    assert_eq!(
        outcome(&store, at(NOW + 5, req(1, 2, 2, 1))).await,
        ReserveOutcome::Reserved
    );
    // Adopt: a missing hold takes its units once; a second adopt or another shape changes nothing.
    assert_eq!(store.adopt(1, 3, 3, 2).await.unwrap(), Adopted);
    assert_eq!(store.adopt(1, 3, 3, 2).await.unwrap(), AlreadyHeld);
    assert_eq!(store.adopt(1, 3, 3, 1).await.unwrap(), Conflict);
    assert_eq!(store.adopt(1, 2, 2, 1).await.unwrap(), AlreadyHeld);
    assert_eq!(store.adopt(9, 4, 1, 1).await.unwrap(), NotTracked);
    assert_eq!(store.remaining(1).await.unwrap(), Some(5));
    // Adopted holds count against the limit and release like any other.
    assert_eq!(
        outcome(&store, req(1, 5, 3, 2)).await,
        ReserveOutcome::LimitReached
    );
    assert!(store.release(3).await.unwrap());
    // A released hold is taken again by an adopt (the database says the order is live).
    assert_eq!(store.adopt(1, 3, 3, 2).await.unwrap(), Adopted);
    let mut audit = store.audit(&s, false).await.unwrap().unwrap();
    audit.holds.sort_unstable_by_key(|h| h.order);
    assert_eq!((audit.remaining_before, audit.remaining_after), (5, 5));
    assert!(audit.users.is_empty());
    assert_eq!(
        audit.holds,
        vec![
            LiveHold {
                order: 1,
                user_id: 1,
                quantity: 2,
                touched_ms: 0
            },
            LiveHold {
                order: 2,
                user_id: 2,
                quantity: 1,
                touched_ms: NOW + 5
            },
            LiveHold {
                order: 3,
                user_id: 3,
                quantity: 2,
                touched_ms: 0
            },
        ]
    );
    // void_absent drops confirmed holds too, but only untouched since the cutoff.
    assert!(
        !store.void(1, NOW).await.unwrap(),
        "void keeps confirmed holds"
    );
    assert!(store.void_absent(1, NOW).await.unwrap());
    assert!(
        !store.void_absent(2, NOW).await.unwrap(),
        "touched after the cutoff"
    );
    assert!(store.void_absent(2, NOW + 5).await.unwrap());
    assert!(!store.void_absent(2, NOW + 5).await.unwrap());
    let audit = store.audit(&s, true).await.unwrap().unwrap();
    assert_eq!((audit.remaining_before, audit.remaining_after), (8, 8));
    assert_eq!(audit.holds.len(), 1);
    assert_eq!(audit.users, Vec::<HeldFix>::new());
    assert_eq!(store.audit(&sale(9, 1, 1), false).await.unwrap(), None);
}

/// The leak this guards against: a sale is lost, the rebuild reads the database, then an order
/// is cancelled and released, then the rebuild writes the order's hold from its earlier read.
async fn a_release_before_the_rebuild_is_honoured(store: Store) {
    use ReserveOutcome::*;
    assert!(
        !store.release(5).await.unwrap(),
        "nothing to give back to yet"
    );
    let read_before_the_cancel = [stored(5, 1, 1, 2, false), stored(6, 1, 2, 1, false)];
    assert!(store
        .load(&sale(1, 10, 2), &read_before_the_cancel)
        .await
        .unwrap());
    assert_eq!(
        store.remaining(1).await.unwrap(),
        Some(9),
        "order 5 holds nothing"
    );
    assert!(!store.release(5).await.unwrap(), "released once");
    assert_eq!(
        outcome(&store, req(1, 5, 1, 2)).await,
        AlreadyReserved,
        "a spent order id"
    );
    assert_eq!(
        outcome(&store, req(1, 7, 1, 2)).await,
        Reserved,
        "user 1 holds nothing"
    );
    assert_eq!(store.remaining(1).await.unwrap(), Some(7));
    // An order id released before anything held it is spent as well.
    assert!(!store.release(8).await.unwrap());
    assert_eq!(outcome(&store, req(1, 8, 3, 1)).await, AlreadyReserved);
    assert_eq!(store.remaining(1).await.unwrap(), Some(7));
}

// ---------------------------------------------------------------------------------------------
// One test per case and backend.
// ---------------------------------------------------------------------------------------------

/// The next stock event, within 10 s.
async fn next_event(
    events: &mut flashsale_inventory::stock::StockEvents,
) -> flashsale_inventory::stock::StockEvent {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("a stock event in time")
        .expect("the stream is open")
}

/// Watchers hear a sale sell out (and again at each refusal for want of stock) and come back.
async fn watchers_hear_sold_out_and_restocked(store: Store) {
    use flashsale_inventory::stock::StockEvent::{Restocked, SoldOut};
    use ReserveOutcome::Reserved;
    // Loaded before watching: a (re)load may announce the sale restocked (Redis does, so a
    // gateway forgets a sold-out pushed before a rebuild).
    store.load(&sale(1, 2, 5), &[]).await.unwrap();
    let mut events = store.watch().await.unwrap();
    assert_eq!(outcome(&store, req(1, 1, 1, 1)).await, Reserved);
    assert_eq!(outcome(&store, req(1, 2, 2, 1)).await, Reserved);
    assert_eq!(
        next_event(&mut events).await,
        SoldOut(1),
        "the last unit was taken"
    );
    assert_eq!(
        outcome(&store, req(1, 3, 3, 1)).await,
        ReserveOutcome::SoldOut
    );
    assert_eq!(
        next_event(&mut events).await,
        SoldOut(1),
        "told again at a refusal"
    );
    assert!(store.release(1).await.unwrap());
    assert_eq!(
        next_event(&mut events).await,
        Restocked(1),
        "a unit came back"
    );
    // Giving back more while stock is left is no news; selling out again is.
    assert_eq!(outcome(&store, req(1, 4, 4, 1)).await, Reserved);
    assert_eq!(next_event(&mut events).await, SoldOut(1));
}

/// Runs a conformance case on a [`RedisStock`] over a fresh prefix.
async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_redis(|test| case(Arc::new(RedisStock::new(test.redis)))).await;
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(super::MemoryStock::new()))
                        .await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }
    };
}

conformance!(
    same_order_id_reserves_once,
    window_is_enforced,
    sold_out_takes_nothing,
    per_user_limit_is_enforced,
    release_gives_stock_back_once,
    void_only_drops_old_unconfirmed_holds,
    unconfirmed_filters_by_last_touch,
    confirm_takes_many_orders_at_once,
    load_skips_a_tracked_sale,
    load_rebuilds_from_stored_reservations,
    unknown_sale_is_not_found,
    concurrent_reserves_never_oversell,
    concurrent_batches_never_oversell,
    reserve_many_decides_in_order,
    concurrent_releases_give_back_once,
    concurrent_loads_build_once,
    adopt_audit_and_void_absent_keep_counters_and_holds_in_step,
    a_release_before_the_rebuild_is_honoured,
    watchers_hear_sold_out_and_restocked,
);

// ---------------------------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------------------------

/// Two inventory instances: separate connections, same server and prefix.
async fn two_instances(test: &TestRedis) -> Vec<Store> {
    vec![
        Arc::new(RedisStock::new(test.redis.clone())),
        Arc::new(RedisStock::new(Redis::connect(&test.config).await.unwrap())),
    ]
}

async fn raw<T: ::redis::FromRedisValue>(test: &TestRedis, cmd: &mut ::redis::Cmd) -> T {
    cmd.query_async(&mut test.redis.conn()).await.unwrap()
}

/// A pipelined EVALSHA does not load its script: after `SCRIPT FLUSH` (or a Redis restart) a
/// batch loads it and is decided once, as if nothing happened.
#[tokio::test]
async fn redis_a_batch_survives_a_flushed_script_cache() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        store.load(&sale(1, 10, 10), &[]).await.unwrap();
        let _: () = raw(&test, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
        let batch: Vec<ReserveRequest> = (1..=4).map(|n| req(1, n, 1, 1)).collect();
        let decisions = store.reserve_many(&batch).await.unwrap();
        let outcomes: Vec<ReserveOutcome> = decisions.iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, vec![ReserveOutcome::Reserved; 4]);
        assert_eq!(decisions[3].remaining, 6);
        assert_eq!(
            store.remaining(1).await.unwrap(),
            Some(6),
            "each taken once"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_instances_never_oversell() {
    with_redis(|test| async move {
        let stores = two_instances(&test).await;
        let (one, two) = (Arc::clone(&stores[0]), Arc::clone(&stores[1]));
        let first = sale(1, 100, 2);
        let (a, b) = tokio::join!(one.load(&first, &[]), two.load(&first, &[]));
        assert_eq!(u8::from(a.unwrap()) + u8::from(b.unwrap()), 1, "built once");
        race_for_the_stock(stores.clone(), 1, 1).await;

        stores[1].load(&sale(2, 100, 100), &[]).await.unwrap();
        for order in 1..=50 {
            let store = &stores[usize::try_from(order % 2).unwrap()];
            let user = i64::try_from(order).unwrap();
            assert_eq!(
                outcome(store, req(2, order, user, 1)).await,
                ReserveOutcome::Reserved
            );
        }
        release_all(stores, 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_concurrent_loads_from_two_instances_build_once() {
    with_redis(|test| async move { load_concurrently(two_instances(&test).await).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_large_load_is_complete_before_reserve_sees_it() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        let reservations = many_reservations(1, 20_000);
        // 20,000 stored, 2,000 of them released: 18,000 units held.
        let loader = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.load(&sale(1, 30_000, 2), &reservations).await })
        };
        let mut early = 0;
        let mut seen_complete = false;
        while !seen_complete {
            match store.remaining(1).await.unwrap() {
                None => early += 1,
                Some(remaining) => assert_eq!(remaining, 12_000, "a partly built sale was visible"),
            }
            // Reservations in the first and the last chunk are both held once reserve sees the sale.
            for order in [1, 19_999] {
                let user = i64::try_from(order).unwrap();
                match reserve(&store, req(1, order, user, 1)).await {
                    d if d.outcome == ReserveOutcome::NotFound => early += 1,
                    d => {
                        assert_eq!(d, decision(ReserveOutcome::AlreadyReserved, 12_000));
                        seen_complete = true;
                    }
                }
            }
        }
        assert!(loader.await.unwrap().unwrap());
        eprintln!("{early} probes found the sale not yet built");
        assert_eq!(store.remaining(1).await.unwrap(), Some(12_000));
        // User 20,000's only stored reservation was released: both units are theirs to take.
        assert_eq!(
            outcome(&store, req(1, 40_000, 20_000, 2)).await,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            outcome(&store, req(1, 30_000, 1, 1)).await,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            outcome(&store, req(1, 30_001, 1, 1)).await,
            ReserveOutcome::LimitReached
        );
    })
    .await;
}

#[tokio::test]
async fn redis_an_abandoned_build_is_taken_over() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        // A build whose instance died: the sale hash without `ready`, no lease.
        let () = raw(
            &test,
            ::redis::cmd("HSET")
                .arg(test.redis.key("stock:sale:1"))
                .arg(&[
                    "remaining",
                    "1",
                    "limit",
                    "1",
                    "starts",
                    "0",
                    "ends",
                    "1",
                    "gen",
                    "77",
                ]),
        )
        .await;
        assert_eq!(
            reserve(&store, req(1, 1, 1, 1)).await,
            decision(ReserveOutcome::NotFound, 0)
        );
        assert_eq!(store.remaining(1).await.unwrap(), None);
        assert!(store
            .load(&sale(1, 10, 2), &[stored(5, 1, 1, 2, false)])
            .await
            .unwrap());
        assert_eq!(store.remaining(1).await.unwrap(), Some(8));

        // A build in progress elsewhere (a lease): waited for, then taken over when it lapses.
        let () = raw(
            &test,
            ::redis::cmd("HSET")
                .arg(test.redis.key("stock:sale:2"))
                .arg(&["remaining", "1", "gen", "78"]),
        )
        .await;
        // The clock starts before the lease is written, so the lease lapses no earlier than
        // `lease` after `started` however slow the round trip is (100 ms allowed for rounding
        // between the two clocks).
        let lease = Duration::from_millis(1_000);
        let started = Instant::now();
        let () = raw(
            &test,
            ::redis::cmd("SET")
                .arg(test.redis.key("stock:sale:2:loading"))
                .arg("78")
                .arg("PX")
                .arg(u64::try_from(lease.as_millis()).unwrap()),
        )
        .await;
        assert!(store.load(&sale(2, 10, 2), &[]).await.unwrap());
        let waited = started.elapsed();
        assert!(
            waited >= lease - Duration::from_millis(100),
            "did not wait for the lease: loaded {waited:?} after writing it"
        );
        assert_eq!(store.remaining(2).await.unwrap(), Some(10));
        assert_eq!(
            outcome(&store, req(2, 9, 1, 2)).await,
            ReserveOutcome::Reserved
        );
    })
    .await;
}

#[tokio::test]
async fn redis_holds_from_before_a_rebuild_give_nothing_back() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        store.load(&sale(1, 10, 5), &[]).await.unwrap();
        assert_eq!(
            outcome(&store, req(1, 1, 1, 2)).await,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            outcome(&store, req(1, 2, 1, 2)).await,
            ReserveOutcome::Reserved
        );
        // Redis loses the sale but keeps the holds; the database knows neither order.
        let () = raw(
            &test,
            ::redis::cmd("DEL")
                .arg(test.redis.key("stock:sale:1"))
                .arg(test.redis.key("stock:sale:1:held")),
        )
        .await;
        assert_eq!(
            outcome(&store, req(1, 3, 1, 1)).await,
            ReserveOutcome::NotFound
        );
        assert!(store.load(&sale(1, 10, 5), &[]).await.unwrap());
        assert_eq!(store.remaining(1).await.unwrap(), Some(10));
        assert!(
            !store.release(1).await.unwrap(),
            "not part of the rebuilt stock"
        );
        assert!(store.void(2, NOW).await.unwrap(), "dropped");
        assert_eq!(
            store.remaining(1).await.unwrap(),
            Some(10),
            "nothing given back twice"
        );
        assert_eq!(
            store.unconfirmed(i64::MAX).await.unwrap(),
            Vec::<u128>::new()
        );
        // A retry of the old order id reserves afresh rather than passing as reserved.
        assert_eq!(
            reserve(&store, req(1, 1, 1, 2)).await,
            decision(ReserveOutcome::Reserved, 8)
        );
        assert!(store.release(1).await.unwrap());
        assert_eq!(store.remaining(1).await.unwrap(), Some(10));
    })
    .await;
}

#[tokio::test]
async fn redis_refuses_another_databases_sale_under_the_same_id() {
    with_redis(|test| async move {
        let store = RedisStock::new(test.redis.clone());
        assert!(store.load(&sale(1, 5, 2), &[]).await.unwrap());
        // A new database whose sale 1 has another limit or window, on the same Redis and
        // prefix: its stock must not be taken for ours.
        assert!(store.load(&sale(1, 5, 3), &[]).await.is_err());
        let mut later = sale(1, 5, 2);
        later.ends_at_ms += 1;
        assert!(store.load(&later, &[]).await.is_err());
        assert!(!store.load(&sale(1, 5, 2), &[]).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn redis_numbers_are_written_exactly() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        let max_exact = (1_i64 << 53) - 1;
        let wide = Sale {
            starts_at_ms: 0,
            ends_at_ms: 1 << 53,
            ..sale(1, 1_000_000_000, 1_000_000_000)
        };
        store.load(&wide, &[]).await.unwrap();
        let order = uuid::Uuid::new_v4().as_u128();
        let d = reserve(&store, at(max_exact, req(1, order, 1, 999_999_999))).await;
        assert_eq!(d, decision(ReserveOutcome::Reserved, 1));
        let hold = test.redis.key(&format!("stock:hold:{order:032x}"));
        let (touched, qty): (String, String) = raw(
            &test,
            ::redis::cmd("HMGET").arg(&hold).arg(&["touched", "qty"]),
        )
        .await;
        assert_eq!(
            (touched.as_str(), qty.as_str()),
            ("9007199254740991", "999999999")
        );
        let remaining: String = raw(
            &test,
            ::redis::cmd("HGET")
                .arg(test.redis.key("stock:sale:1"))
                .arg("remaining"),
        )
        .await;
        assert_eq!(remaining, "1");
        assert_eq!(store.unconfirmed(max_exact).await.unwrap(), vec![order]);
        assert_eq!(
            store.unconfirmed(max_exact - 1).await.unwrap(),
            Vec::<u128>::new()
        );
        assert!(store.release(order).await.unwrap());
        assert_eq!(store.remaining(1).await.unwrap(), Some(1_000_000_000));
    })
    .await;
}

#[tokio::test]
async fn redis_a_release_of_a_lost_sales_hold_is_honoured_by_the_rebuild() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        store.load(&sale(1, 10, 2), &[]).await.unwrap();
        assert_eq!(
            outcome(&store, req(1, 5, 1, 2)).await,
            ReserveOutcome::Reserved
        );
        // Redis loses the sale but keeps the hold; the order is cancelled and released.
        let sale_key = test.redis.key("stock:sale:1");
        let () = raw(
            &test,
            ::redis::cmd("DEL")
                .arg(&sale_key)
                .arg(format!("{sale_key}:held"))
                .arg(format!("{sale_key}:holds")),
        )
        .await;
        assert!(!store.release(5).await.unwrap());
        // The rebuild read the database before the cancel.
        assert!(store
            .load(&sale(1, 10, 2), &[stored(5, 1, 1, 2, false)])
            .await
            .unwrap());
        assert_eq!(store.remaining(1).await.unwrap(), Some(10));
        assert_eq!(
            outcome(&store, req(1, 6, 1, 2)).await,
            ReserveOutcome::Reserved
        );
    })
    .await;
}

#[tokio::test]
async fn redis_a_release_during_a_build_gives_back_to_it() {
    with_redis(|test| async move {
        let store: Store = Arc::new(RedisStock::new(test.redis.clone()));
        store
            .load(&sale(1, 10, 2), &[stored(5, 1, 1, 2, false)])
            .await
            .unwrap();
        // As if the build had written the hold but not finished yet.
        let sale_key = test.redis.key("stock:sale:1");
        let _: i64 = raw(&test, ::redis::cmd("HDEL").arg(&sale_key).arg("ready")).await;
        assert_eq!(store.remaining(1).await.unwrap(), None);
        assert!(store.release(5).await.unwrap());
        let _: i64 = raw(
            &test,
            ::redis::cmd("HSET").arg(&sale_key).arg("ready").arg("1"),
        )
        .await;
        assert_eq!(store.remaining(1).await.unwrap(), Some(10));
        assert!(!store.release(5).await.unwrap());
    })
    .await;
}
