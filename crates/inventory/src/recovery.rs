//! Getting stock back when a shared backend lost it, and learning sales created elsewhere.
//!
//! With the Redis backend the stock counters live outside the process. If Redis loses them — a
//! restart without persistence, a FLUSHALL, an eviction — a reserve for a sale this service knows
//! finds nothing. Rebuilding at once from the database would be wrong: reservations taken just
//! before the loss whose orders are still on their way to the order journal are in neither
//! place, and their stock would be sold a second time. So the sale is paused (reserves answer
//! `UNAVAILABLE`, the gateway `503`) for the reservation grace period — by then every such order
//! is in the journal or will be refused by it as too old (the same rule that makes voiding
//! orphan reservations safe, see `reconcile`) — and then rebuilt from the database: orders and
//! queued order requests, exactly as at start-up. Several inventory instances may all notice;
//! the backend builds the sale once (`StockStore::load` leaves a tracked sale alone).
//!
//! [`refresh_catalog`] keeps this instance's list of sales current when other instances create
//! sales (shared backend only): a reserve for an id that is not in the list is answered
//! "no such sale" without touching the backend or the database.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::{catalog::Catalog, sale::Sale, stock::StockStore};

/// Sales whose stock is being rebuilt.
#[derive(Clone)]
pub struct Recovery {
    rebuilding: Arc<DashMap<i64, ()>>,
    delay: Duration,
    catalog: Arc<dyn Catalog>,
    stock: Arc<dyn StockStore>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("rebuilding", &self.rebuilding.len())
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Recovery {
    /// Rebuilds wait `delay` (the reservation grace period) before reading the database.
    pub fn new(catalog: Arc<dyn Catalog>, stock: Arc<dyn StockStore>, delay: Duration) -> Self {
        Self {
            rebuilding: Arc::new(DashMap::new()),
            delay,
            catalog,
            stock,
        }
    }

    /// How long a rebuild waits: the reservation grace period.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether reserves for this sale must wait for its rebuild.
    pub fn is_rebuilding(&self, sale_id: i64) -> bool {
        self.rebuilding.contains_key(&sale_id)
    }

    /// The backend lost this sale: pause it and rebuild it after the grace period (once, however
    /// often it is called meanwhile).
    pub fn start(&self, sale: Sale) {
        if self.rebuilding.insert(sale.id, ()).is_some() {
            return;
        }
        tracing::error!(
            sale_id = sale.id,
            delay_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            "stock backend lost this sale; paused until it is rebuilt from the database"
        );
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.delay).await;
            let mut retry = tokio::time::interval(Duration::from_secs(1));
            loop {
                retry.tick().await;
                match this.rebuild(&sale).await {
                    Ok(loaded) => {
                        tracing::warn!(sale_id = sale.id, loaded, "sale rebuilt; selling again");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(sale_id = sale.id, error = %e, "rebuild failed; retrying")
                    }
                }
            }
            this.rebuilding.remove(&sale.id);
        });
    }

    async fn rebuild(&self, sale: &Sale) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let reservations: Vec<_> = self
            .catalog
            .load_reservations()
            .await?
            .into_iter()
            .filter(|r| r.sale_id == sale.id)
            .collect();
        Ok(self.stock.load(sale, &reservations).await?)
    }
}

/// Adds sales created by other instances to `sales` every `interval`, until `shutdown`.
pub async fn refresh_catalog(
    catalog: Arc<dyn Catalog>,
    sales: Arc<RwLock<BTreeMap<i64, Sale>>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    flashsale_storage::periodic::every(interval, shutdown, || async {
        match catalog.list().await {
            Ok(all) => {
                let mut known = sales.write();
                for sale in all {
                    known.entry(sale.id).or_insert(sale);
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing sales failed"),
        }
    })
    .await;
}
