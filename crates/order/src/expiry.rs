//! Payment timeout and stock-release retries.
//!
//! Every `interval` the sweeper expires unpaid orders whose payment time is over (an
//! optimistic-locking transition, so a payment racing it wins or loses cleanly, never both),
//! then releases the stock of every cancelled or expired order not yet confirmed released —
//! including releases that failed earlier, e.g. because the inventory service was down.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    model::OrderStatus,
    release::StockReleaser,
    store::{OrderStore, StoreError},
};

/// Most orders handled per sweep step.
const SWEEP_LIMIT: i64 = 1000;

/// Runs the sweeper until `shutdown` is cancelled; `clock` says what is due.
pub async fn run(
    store: Arc<dyn OrderStore>,
    releaser: Arc<dyn StockReleaser>,
    interval: Duration,
    clock: flashsale_kernel::SharedClock,
    shutdown: CancellationToken,
) {
    flashsale_kernel::periodic::every(interval, shutdown, || async {
        if let Err(e) = sweep(&*store, &*releaser, clock.now_ms()).await {
            tracing::error!(error = %e, "expiry sweep failed");
        }
    })
    .await;
}

/// One sweep: expire what is due, then release what is owed. Returns how many orders expired.
pub async fn sweep(
    store: &dyn OrderStore,
    releaser: &dyn StockReleaser,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut expired = 0;
    for order in store.due_for_expiry(now_ms, SWEEP_LIMIT).await? {
        if store
            .transition(
                &order.id,
                OrderStatus::Created,
                order.version,
                OrderStatus::Expired,
                now_ms,
            )
            .await?
        {
            expired += 1;
        }
    }
    if expired > 0 {
        metrics::counter!(flashsale_telemetry::metrics::ORDERS_EXPIRED).increment(expired as u64);
        tracing::info!(expired, "unpaid orders expired");
    }
    for order in store.unreleased(SWEEP_LIMIT).await? {
        if !release_stock(store, releaser, &order.id).await? {
            // The inventory is unreachable: stop here rather than wait out every timeout.
            break;
        }
    }
    Ok(expired)
}

/// Releases one order's stock and records it. Returns `false` when the release failed (logged;
/// left for the next sweep).
pub async fn release_stock(
    store: &dyn OrderStore,
    releaser: &dyn StockReleaser,
    order_id: &str,
) -> Result<bool, StoreError> {
    release_stock_within(store, releaser, order_id, crate::release::RELEASE_TIMEOUT).await
}

/// [`release_stock`] within `budget` (what is left of the request that asked for it).
pub async fn release_stock_within(
    store: &dyn OrderStore,
    releaser: &dyn StockReleaser,
    order_id: &str,
    budget: std::time::Duration,
) -> Result<bool, StoreError> {
    match releaser.release_within(order_id, budget).await {
        Ok(()) => store.mark_released(order_id).await.map(|()| true),
        Err(e) => {
            tracing::warn!(error = %e, order_id, "stock release failed; will retry");
            Ok(false)
        }
    }
}
