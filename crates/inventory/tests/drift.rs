//! Drift repair (`drift::reconcile`, behind `flashsale inventory reconcile`) against the real
//! embedded database, on both stock backends (Redis: the real server, under a prefix of its
//! own): injected drift is reported exactly, a dry run changes nothing, a repair fixes exactly
//! what was reported, a clean sale reports nothing, and reconciling in the middle of a rush of
//! concurrent buyers never oversells.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use flashsale_order::held::JournalHeld;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{database, with_redis};
use flashsale_inventory::{
    catalog::{Catalog, SqlCatalog},
    drift::{reconcile, SaleDrift},
    sale::{NewSale, Sale},
    stock::{HeldFix, MemoryStock, RedisStock, ReserveOutcome, ReserveRequest, StockStore},
};
use flashsale_redis::testing::TestRedis;
use flashsale_storage::{now_ms, SqlitePool};

/// Shorter than the default 30 s and than the age of the orphans here (60 s), which it must
/// void; long enough that a young hold stays in flight through several reconciles, and longer
/// than any buyer's queueing delay here, on a loaded machine.
const GRACE: Duration = Duration::from_secs(20);

/// A backend with a way to make its counters drift from its holds.
enum Backend {
    Memory(Arc<MemoryStock>),
    Redis(Arc<RedisStock>, TestRedis),
}

impl Backend {
    fn store(&self) -> Arc<dyn StockStore> {
        match self {
            Self::Memory(s) => s.clone(),
            Self::Redis(s, _) => s.clone(),
        }
    }

    /// Moves `remaining` by `remaining_delta` and `user_id`'s held units by `held_delta`.
    async fn skew(&self, sale_id: i64, remaining_delta: i64, user_id: i64, held_delta: i64) {
        match self {
            Self::Memory(s) => s.inject_drift(sale_id, remaining_delta, user_id, held_delta),
            Self::Redis(_, test) => {
                let sale = test.redis.key(&format!("stock:sale:{sale_id}"));
                let () = ::redis::pipe()
                    .cmd("HINCRBY")
                    .arg(&sale)
                    .arg("remaining")
                    .arg(remaining_delta)
                    .ignore()
                    .cmd("HINCRBY")
                    .arg(format!("{sale}:held"))
                    .arg(user_id)
                    .arg(held_delta)
                    .ignore()
                    .query_async(&mut test.redis.conn())
                    .await
                    .unwrap();
            }
        }
    }
}

/// Runs `case` on memory stock.
async fn on_memory<F, Fut>(case: F)
where
    F: FnOnce(Arc<Backend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    case(Arc::new(Backend::Memory(Arc::new(MemoryStock::new())))).await;
}

/// Runs `case` on Redis stock under a fresh prefix, deleting its keys afterwards.
async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(Arc<Backend>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    with_redis(|test| {
        case(Arc::new(Backend::Redis(
            Arc::new(RedisStock::new(test.redis.clone())),
            test,
        )))
    })
    .await;
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_memory(super::$case).await;
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

both_backends!(
    drift_is_reported_then_repaired_exactly,
    a_clean_sale_reports_no_change,
    reconciling_during_a_rush_never_oversells,
);

async fn open_sale(catalog: &SqlCatalog, stock: i64, per_user_limit: i64) -> Sale {
    let now = now_ms();
    catalog
        .create(&NewSale {
            name: "item".into(),
            price_cents: 100,
            stock,
            per_user_limit,
            // Opened an hour ago: old reserves (orphans) are inside the window.
            starts_at_ms: now - 3_600_000,
            ends_at_ms: now + 3_600_000,
        })
        .await
        .unwrap()
}

fn order(n: u128) -> u128 {
    uuid::Uuid::new_v4().as_u128() ^ n
}

async fn reserve_at(
    stock: &dyn StockStore,
    sale_id: i64,
    order: u128,
    user_id: i64,
    quantity: i64,
    now_ms: i64,
) -> ReserveOutcome {
    stock
        .reserve(ReserveRequest {
            order,
            sale_id,
            user_id,
            quantity,
            now_ms,
        })
        .await
        .unwrap()
        .outcome
}

/// An accepted order request in the queue journal.
async fn queued(pool: &SqlitePool, order: u128, sale_id: i64, user_id: i64, quantity: i64) {
    sqlx::query(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms)
         VALUES (?, ?, ?, ?, 100, ?, ?)",
    )
    .bind(uuid::Uuid::from_u128(order).to_string())
    .bind(user_id)
    .bind(sale_id)
    .bind(quantity)
    .bind(format!("k{order:x}"))
    .bind(now_ms())
    .execute(pool)
    .await
    .unwrap();
}

/// An order row with this status.
async fn stored_order(
    pool: &SqlitePool,
    order: u128,
    sale_id: i64,
    user_id: i64,
    quantity: i64,
    status: &str,
) {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO orders (id, user_id, sale_id, quantity, price_cents, idempotency_key, status,
                             created_at_ms, updated_at_ms, expires_at_ms)
         VALUES (?, ?, ?, ?, 100, ?, ?, ?, ?, ?)",
    )
    .bind(uuid::Uuid::from_u128(order).to_string())
    .bind(user_id)
    .bind(sale_id)
    .bind(quantity)
    .bind(format!("k{order:x}"))
    .bind(status)
    .bind(now)
    .bind(now)
    .bind(now + 900_000)
    .execute(pool)
    .await
    .unwrap();
}

async fn run(
    catalog: &SqlCatalog,
    stock: &dyn StockStore,
    sale: &Sale,
    dry_run: bool,
) -> SaleDrift {
    let mut reports = reconcile(catalog, stock, std::slice::from_ref(sale), GRACE, dry_run)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

async fn drift_is_reported_then_repaired_exactly(backend: Arc<Backend>) {
    let (_dir, pool) = database().await;
    let catalog = SqlCatalog::new(pool.clone(), JournalHeld::shared(pool.clone()));
    let stock = backend.store();
    let sale = open_sale(&catalog, 20, 5).await;
    assert!(stock.load(&sale, &[]).await.unwrap());
    let now = now_ms();
    let [a, b, c, d, e, f] = [1, 2, 3, 4, 5, 6].map(order);
    // In step: a queued request and a stored order, each with its hold.
    assert_eq!(
        reserve_at(&*stock, sale.id, a, 1, 2, now).await,
        ReserveOutcome::Reserved
    );
    queued(&pool, a, sale.id, 1, 2).await;
    assert_eq!(
        reserve_at(&*stock, sale.id, b, 2, 1, now).await,
        ReserveOutcome::Reserved
    );
    stored_order(&pool, b, sale.id, 2, 1, "pending").await;
    // A hold missing: the journal has the order, the backend holds nothing for it.
    queued(&pool, c, sale.id, 3, 2).await;
    // An orphan hold, older than the grace period, whose order the database does not have.
    assert_eq!(
        reserve_at(&*stock, sale.id, d, 4, 1, now - 60_000).await,
        ReserveOutcome::Reserved
    );
    // A young one: a buy in flight, to be left alone.
    assert_eq!(
        reserve_at(&*stock, sale.id, e, 5, 1, now).await,
        ReserveOutcome::Reserved
    );
    // A cancelled order whose release never arrived.
    assert_eq!(
        reserve_at(&*stock, sale.id, f, 6, 1, now).await,
        ReserveOutcome::Reserved
    );
    stored_order(&pool, f, sale.id, 6, 1, "cancelled").await;
    // Counters off: 3 units too many left, user 1 short of one held unit, user 9 a ghost.
    backend.skew(sale.id, 3, 1, -1).await;
    backend.skew(sale.id, 0, 9, 2).await;
    // Live holds a, b, d, e, f = 6 units: remaining should be 14, the counter says 17.
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(17));

    let expected = SaleDrift {
        sale_id: sale.id,
        tracked: true,
        remaining_before: 17,
        // 14, then c taken (−2), d voided (+1), f released (+1).
        remaining_after: 14,
        adopted: 1,
        released: 1,
        voided: 1,
        users_fixed: vec![
            HeldFix {
                user_id: 1,
                before: 1,
                after: 2,
            },
            HeldFix {
                user_id: 9,
                before: 2,
                after: 0,
            },
        ],
        in_flight: 1,
        conflicts: 0,
    };
    let sorted = |mut d: SaleDrift| {
        d.users_fixed.sort_unstable_by_key(|f| f.user_id);
        d
    };
    // Dry runs report it all and change nothing.
    for _ in 0..2 {
        let dry = sorted(run(&catalog, &*stock, &sale, true).await);
        assert_eq!(dry, expected);
        assert!(dry.drifted());
        assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(17));
    }
    // With the wrong counter, user 1 (2 units held, limit 5) could take 4 more.
    let repaired = sorted(run(&catalog, &*stock, &sale, false).await);
    assert_eq!(repaired, expected);
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(14));

    // Now clean: only the young hold is reported, as in flight.
    let after = run(&catalog, &*stock, &sale, true).await;
    assert_eq!(
        after,
        SaleDrift {
            sale_id: sale.id,
            tracked: true,
            remaining_before: 14,
            remaining_after: 14,
            in_flight: 1,
            ..SaleDrift::default()
        }
    );
    assert!(!after.drifted());
    // The repairs are real holds and counters: user 1 holds 2 (4 more would pass the limit),
    // user 9 holds nothing, c's hold gives its units back once, f's is gone already.
    assert_eq!(
        reserve_at(&*stock, sale.id, order(7), 1, 4, now).await,
        ReserveOutcome::LimitReached
    );
    assert_eq!(
        reserve_at(&*stock, sale.id, order(8), 9, 5, now).await,
        ReserveOutcome::Reserved
    );
    assert!(stock.release(c).await.unwrap());
    assert!(!stock.release(c).await.unwrap());
    assert!(!stock.release(f).await.unwrap());
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(14 - 5 + 2));
}

async fn a_clean_sale_reports_no_change(backend: Arc<Backend>) {
    let (_dir, pool) = database().await;
    let catalog = SqlCatalog::new(pool.clone(), JournalHeld::shared(pool.clone()));
    let stock = backend.store();
    let busy = open_sale(&catalog, 10, 2).await;
    let empty = open_sale(&catalog, 5, 1).await;
    let never_loaded = open_sale(&catalog, 5, 1).await;
    let now = now_ms();
    let (a, b, cancelled) = (order(1), order(2), order(3));
    // Stored before the load: rebuilt from the database (confirmed, touched 0).
    stored_order(&pool, cancelled, busy.id, 3, 1, "expired").await;
    queued(&pool, a, busy.id, 1, 2).await;
    let reservations = catalog.load_reservations().await.unwrap();
    assert!(stock.load(&busy, &reservations).await.unwrap());
    assert!(stock.load(&empty, &reservations).await.unwrap());
    // Reserved live, then stored.
    assert_eq!(
        reserve_at(&*stock, busy.id, b, 2, 1, now).await,
        ReserveOutcome::Reserved
    );
    stored_order(&pool, b, busy.id, 2, 1, "paid").await;

    let sales = [busy.clone(), empty.clone(), never_loaded.clone()];
    for dry_run in [true, false, true] {
        let reports = reconcile(&catalog, &*stock, &sales, GRACE, dry_run)
            .await
            .unwrap();
        let clean = |sale: &Sale, remaining| SaleDrift {
            sale_id: sale.id,
            tracked: true,
            remaining_before: remaining,
            remaining_after: remaining,
            ..SaleDrift::default()
        };
        assert_eq!(
            reports,
            vec![
                clean(&busy, 7),
                clean(&empty, 5),
                SaleDrift {
                    sale_id: never_loaded.id,
                    ..SaleDrift::default()
                }
            ],
            "dry run {dry_run}"
        );
        assert!(reports.iter().all(|r| !r.drifted()));
    }
    assert_eq!(stock.remaining(busy.id).await.unwrap(), Some(7));
}

/// 64 buyers rush a sale of 100 (limit 2) whose backend starts with 10 units held by orphans and
/// its counter 5 short, while reconciliations repair it again and again. Each buyer writes its
/// order to the journal a little after its reserve (the window a wrong void would hit). Exactly
/// 100 are sold, nobody above 2, `remaining` never below zero, and the end state is clean.
async fn reconciling_during_a_rush_never_oversells(backend: Arc<Backend>) {
    let (_dir, pool) = database().await;
    let catalog = Arc::new(SqlCatalog::new(
        pool.clone(),
        JournalHeld::shared(pool.clone()),
    ));
    let stock = backend.store();
    let sale = open_sale(&catalog, 100, 2).await;
    assert!(stock.load(&sale, &[]).await.unwrap());
    let now = now_ms();
    for user in 1_001..=1_010 {
        assert_eq!(
            reserve_at(&*stock, sale.id, order(0), user, 1, now - 60_000).await,
            ReserveOutcome::Reserved
        );
    }
    backend.skew(sale.id, -5, 1_001, 0).await;
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(85));

    let sold = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(30);
    let reader = {
        let (stock, done) = (Arc::clone(&stock), Arc::clone(&done));
        tokio::spawn(async move {
            let mut reads = 0_u64;
            while !done.load(Ordering::Relaxed) {
                let left = stock.remaining(sale.id).await.unwrap().unwrap();
                assert!(left >= 0, "remaining went negative: {left}");
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let reconciler = {
        let (catalog, stock, done, sale) = (
            Arc::clone(&catalog),
            Arc::clone(&stock),
            Arc::clone(&done),
            sale.clone(),
        );
        tokio::spawn(async move {
            let mut passes = 0_u64;
            while !done.load(Ordering::Relaxed) {
                reconcile(
                    &*catalog,
                    &*stock,
                    std::slice::from_ref(&sale),
                    GRACE,
                    false,
                )
                .await
                .unwrap();
                passes += 1;
                // Pacing, not synchronisation: a reconciler pass every 5 ms during the rush.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            passes
        })
    };
    let buyers: Vec<_> = (0..64)
        .map(|_| {
            let (stock, pool, sold, attempts) = (
                Arc::clone(&stock),
                pool.clone(),
                Arc::clone(&sold),
                Arc::clone(&attempts),
            );
            tokio::spawn(async move {
                while sold.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
                    let i = attempts.fetch_add(1, Ordering::Relaxed);
                    let user = i % 300 + 1;
                    let id = order(u128::from(i.unsigned_abs()));
                    match reserve_at(&*stock, sale.id, id, user, 1, now_ms()).await {
                        ReserveOutcome::Reserved => {
                            // The gateway's hop to the order journal (a simulated
                            // latency, part of the scenario, not a wait for anything).
                            tokio::time::sleep(Duration::from_millis(i.unsigned_abs() % 20)).await;
                            queued(&pool, id, sale.id, user, 1).await;
                            sold.fetch_add(1, Ordering::SeqCst);
                        }
                        ReserveOutcome::SoldOut | ReserveOutcome::LimitReached => {
                            tokio::task::yield_now().await;
                        }
                        other => panic!("unexpected outcome {other:?}"),
                    }
                }
            })
        })
        .collect();
    for b in buyers {
        b.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    let passes = reconciler.await.unwrap();
    assert!(reads > 0 && passes > 0, "reads {reads}, passes {passes}");

    assert_eq!(sold.load(Ordering::SeqCst), 100, "the freed stock was sold");
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT user_id, SUM(quantity) FROM order_queue WHERE sale_id = ? GROUP BY user_id",
    )
    .bind(sale.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let per_user: HashMap<i64, i64> = rows.into_iter().collect();
    assert_eq!(
        per_user.values().sum::<i64>(),
        100,
        "exactly the stock sold"
    );
    assert!(per_user.values().all(|&n| n <= 2), "{per_user:?}");
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(0));
    let last = run(&catalog, &*stock, &sale, true).await;
    assert!(!last.drifted(), "{last:?}");
    assert_eq!(last.remaining_before, 0);
}

#[tokio::test]
async fn redis_sale_built_without_its_holds_set_is_refused() {
    with_redis(|test| async move {
        let (_dir, pool) = database().await;
        let catalog = SqlCatalog::new(pool.clone(), JournalHeld::shared(pool));
        let stock = RedisStock::new(test.redis.clone());
        let sale = open_sale(&catalog, 10, 2).await;
        stock.load(&sale, &[]).await.unwrap();
        // As an older version built it: an empty holds set must not mean "nothing is held".
        let _: i64 = ::redis::cmd("HDEL")
            .arg(test.redis.key(&format!("stock:sale:{}", sale.id)))
            .arg("layout")
            .query_async(&mut test.redis.conn())
            .await
            .unwrap();
        let refused = reconcile(&catalog, &stock, std::slice::from_ref(&sale), GRACE, false).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(10));
    })
    .await;
}
