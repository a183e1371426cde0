//! Reconciliation: stock held by buy flows that never queued their order comes back.
//!
//! A reserve and the queueing of its order are two steps (two services). If the caller gives
//! up between them — its time budget ran out, it crashed — the reservation would hold stock
//! for an order that does not exist. Every `interval`, [`reconcile_once`] takes the
//! reservations still unconfirmed `grace` after their last touch, asks the database which of
//! their orders exist (as orders or queued requests), confirms those and voids the rest.
//!
//! `grace` must be far longer than any request budget: a reservation is only voided when no
//! request that made or retried it can still be queueing its order. A retry of a voided order
//! id simply reserves again.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    catalog::{Catalog, CatalogError},
    stock::{StockError, StockStore},
};

/// Why a reconciliation pass (or a drift repair, [`crate::drift`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database could not be asked.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The stock backend failed.
    #[error(transparent)]
    Stock(#[from] StockError),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Reservations whose orders were found.
    pub confirmed: usize,
    /// Reservations without an order, whose stock went back.
    pub voided: usize,
}

/// One pass over reservations last touched at or before `now_ms - grace`.
pub async fn reconcile_once(
    catalog: &dyn Catalog,
    stock: &dyn StockStore,
    now_ms: i64,
    grace: Duration,
) -> Result<ReconcileReport, ReconcileError> {
    let cutoff = now_ms.saturating_sub(flashsale_kernel::duration::as_ms_i64(grace));
    let due = stock.unconfirmed(cutoff).await?;
    if due.is_empty() {
        return Ok(ReconcileReport::default());
    }
    let ids: Vec<String> = due
        .iter()
        .map(|k| uuid::Uuid::from_u128(*k).to_string())
        .collect();
    let known: HashSet<u128> = catalog
        .known_orders(&ids)
        .await?
        .iter()
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .map(|u| u.as_u128())
        .collect();
    let (found, orphans): (Vec<u128>, Vec<u128>) = due.into_iter().partition(|k| known.contains(k));
    stock.confirm(&found).await?;
    let mut voided = 0;
    for order in orphans {
        voided += usize::from(stock.void(order, cutoff).await?);
    }
    if voided > 0 {
        tracing::warn!(
            voided,
            "released stock held by buys whose order was never queued"
        );
    }
    Ok(ReconcileReport {
        confirmed: found.len(),
        voided,
    })
}

/// Runs [`reconcile_once`] every `interval` until `shutdown` is cancelled.
pub async fn run(
    catalog: Arc<dyn Catalog>,
    stock: Arc<dyn StockStore>,
    grace: Duration,
    interval: Duration,
    clock: flashsale_kernel::SharedClock,
    shutdown: CancellationToken,
) {
    flashsale_kernel::periodic::every(interval, shutdown, || async {
        match stock.unconfirmed(i64::MAX).await {
            Ok(open) => {
                metrics::gauge!(flashsale_telemetry::metrics::RESERVATIONS_UNCONFIRMED)
                    .set(open.len() as f64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot count unconfirmed reservations"),
        }
        if let Err(e) = reconcile_once(&*catalog, &*stock, clock.now_ms(), grace).await {
            tracing::error!(error = %e, "stock reconciliation failed");
        }
    })
    .await;
}
