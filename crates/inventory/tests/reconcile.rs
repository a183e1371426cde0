//! Reconciliation against the real embedded database, on both stock backends (the Redis one on
//! the real server): a reservation whose order reached the queue journal is confirmed, one whose
//! order never arrived gets its stock back, and a restart rebuilds the stock from the database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use flashsale_order::held::JournalHeld;
use std::time::Duration;

use common::database;
use flashsale_inventory::{
    catalog::{Catalog, SqlCatalog},
    reconcile::reconcile_once,
    sale::NewSale,
    stock::{MemoryStock, RedisStock, ReserveOutcome, ReserveRequest, StockStore},
};
use flashsale_redis::testing::TestRedis;
use flashsale_storage::now_ms;

#[tokio::test]
async fn orphans_are_voided_and_queued_orders_confirmed() {
    orphans_are_voided_and_queued_orders_confirmed_on(&MemoryStock::new(), &MemoryStock::new())
        .await;
}

#[tokio::test]
async fn orphans_are_voided_and_queued_orders_confirmed_in_redis() {
    let (Some(live), Some(restarted)) = (TestRedis::start().await, TestRedis::start().await) else {
        return;
    };
    orphans_are_voided_and_queued_orders_confirmed_on(
        &RedisStock::new(live.redis.clone()),
        &RedisStock::new(restarted.redis.clone()),
    )
    .await;
    live.cleanup().await;
    restarted.cleanup().await;
}

/// `stock` is the live store; `rebuilt` an empty one standing in for a restart.
async fn orphans_are_voided_and_queued_orders_confirmed_on(
    stock: &dyn StockStore,
    rebuilt: &dyn StockStore,
) {
    let (_dir, pool) = database().await;
    let catalog = SqlCatalog::new(pool.clone(), JournalHeld::shared(pool.clone()));
    let now = now_ms();
    let sale = catalog
        .create(&NewSale {
            name: "item".into(),
            price_cents: 100,
            stock: 10,
            per_user_limit: 5,
            starts_at_ms: now - 1000,
            ends_at_ms: now + 3_600_000,
        })
        .await
        .unwrap();
    stock.load(&sale, &[]).await.unwrap();
    let (queued, orphan) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (order, user) in [(queued, 1), (orphan, 2)] {
        let d = stock
            .reserve(ReserveRequest {
                order: order.as_u128(),
                sale_id: sale.id,
                user_id: user,
                quantity: 2,
                now_ms: now,
            })
            .await
            .unwrap();
        assert_eq!(d.outcome, ReserveOutcome::Reserved);
    }
    sqlx::query(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms)
         VALUES (?, 1, ?, 2, 100, 'k', ?)",
    )
    .bind(queued.to_string())
    .bind(sale.id)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(6));

    let grace = Duration::from_secs(30);
    // Within the grace period nothing is touched.
    let early = reconcile_once(&catalog, stock, now + 1000, grace)
        .await
        .unwrap();
    assert_eq!((early.confirmed, early.voided), (0, 0));
    let report = reconcile_once(&catalog, stock, now + 31_000, grace)
        .await
        .unwrap();
    assert_eq!((report.confirmed, report.voided), (1, 1));
    assert_eq!(stock.remaining(sale.id).await.unwrap(), Some(8));
    // A second pass finds nothing left to do.
    let again = reconcile_once(&catalog, stock, now + 62_000, grace)
        .await
        .unwrap();
    assert_eq!((again.confirmed, again.voided), (0, 0));

    // A restart rebuilds the same numbers from the database alone.
    let reservations = catalog.load_reservations().await.unwrap();
    rebuilt.load(&sale, &reservations).await.unwrap();
    assert_eq!(rebuilt.remaining(sale.id).await.unwrap(), Some(8));
}
