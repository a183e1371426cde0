//! The inventory service, assembled from its configuration section and the process's shared
//! parts.
//!
//! The host hands over the database (the inventory's `sales`), the process's Redis handle and
//! the order side's [`HeldStock`] port; the stock backend (`inventory.stock`) is chosen beside
//! the backends ([`crate::config::StockBackend::open`]). The service comes back with its
//! background workers: the reconciler and, with shared stock, the catalog refresh.

use std::{sync::Arc, time::Duration};

use flashsale_kernel::{held_stock::HeldStock, Assembled, SharedClock, Stops, Worker, Workers};
use flashsale_redis::SharedRedis;
use flashsale_storage::Database;

use crate::{
    catalog::SqlCatalog,
    config::StockBackend,
    service::{InventoryService, OpenError},
    InventoryConfig,
};

/// What the inventory needs from the process that hosts it.
#[derive(Debug, Clone)]
pub struct InventoryParts {
    /// The database holding `sales`.
    pub db: Database,
    /// The process's Redis, connected only if stock lives there.
    pub redis: SharedRedis,
    /// The order side's record of which accepted orders hold stock.
    pub orders: Arc<dyn HeldStock>,
    /// What time it is (which reservations are past their grace).
    pub clock: SharedClock,
}

/// How the inventory comes up relative to the gateways that call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the gateways (`flashsale dev`): nothing can have reserved meanwhile, so every
    /// sale's stock is rebuilt from the database at once.
    WithGateways,
    /// Alone, while gateways may have kept running (`flashsale serve inventory`): a sale whose
    /// stock is not tracked yet is paused and rebuilt after the grace period, so reservations
    /// of the previous process still on their way to the order queue are counted first.
    Alone,
}

/// Why the inventory could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Its tables could not be migrated.
    #[error(transparent)]
    Storage(#[from] flashsale_storage::StorageError),
    /// Stock lives in Redis and Redis cannot be reached.
    #[error(transparent)]
    Redis(#[from] flashsale_redis::ConnectError),
    /// The sales or their stock could not be loaded.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Builds the inventory service and starts its workers, which run until `stops.workers`;
/// its `WatchStock` streams end at `stops.server`.
pub async fn assemble(
    config: &InventoryConfig,
    parts: InventoryParts,
    start: Start,
    stops: &Stops,
) -> Result<Assembled<InventoryService>, AssembleError> {
    let shutdown = &stops.workers;
    parts.db.migrate(crate::schema).await?;
    let stock = config.stock.open(&parts.redis).await?;
    let catalog = Arc::new(SqlCatalog::new(parts.db, parts.orders));
    let grace = Duration::from_millis(config.reservation_grace_ms);
    let service = match start {
        Start::Alone => InventoryService::open_paused(catalog, stock, grace).await?,
        Start::WithGateways => InventoryService::open(catalog, stock)
            .await?
            .with_rebuild_delay(grace),
    };
    let service = service.with_streams_stop(stops.server.clone());
    let mut workers = Workers::new();
    workers.push(Worker::adopt(
        "inventory.reconciler",
        service.spawn_reconciler(config, parts.clock, shutdown.clone()),
    ));
    if config.stock == StockBackend::Redis {
        workers.push(Worker::adopt(
            "inventory.catalog_refresh",
            service.spawn_catalog_refresh(
                Duration::from_millis(config.catalog_refresh_ms.max(10)),
                shutdown.clone(),
            ),
        ));
    }
    Ok(Assembled { service, workers })
}
