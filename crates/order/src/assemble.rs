//! The order service, assembled from its configuration section and the process's shared parts.
//!
//! The host hands over the database and where stock releases go; the queue engine
//! (`order.queue`) is chosen by [`crate::queue::open`], beside the engines. The service comes
//! back with its background workers: the queue consumer (writes queued requests as orders;
//! none with the direct intake, which writes them itself) and the expiry sweeper (expires
//! unpaid orders and retries stock releases).

use std::{sync::Arc, time::Duration};

use flashsale_kernel::{Assembled, SharedClock, Stops, Worker, Workers};
use flashsale_storage::Database;

use crate::{
    config::QueueBackend,
    queue::{self, OrderQueue as _, QueueError},
    release::StockReleaser,
    store::{OrderStore, SqlOrderStore},
    OrderConfig, OrderService,
};

/// What the order service needs from the process that hosts it.
#[derive(Clone)]
pub struct OrderParts {
    /// The database holding `orders` (and the journal, with `queue = "journal"`).
    pub db: Database,
    /// Where cancelled and expired orders give their stock back (the inventory).
    pub releaser: Arc<dyn StockReleaser>,
    /// What time it is (what is due to expire).
    pub clock: SharedClock,
}

impl std::fmt::Debug for OrderParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderParts").finish_non_exhaustive()
    }
}

/// Why the order service could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The section breaks one of its own rules ([`OrderConfig::check`]).
    #[error("configuration: {0}")]
    Config(String),
    /// Its tables could not be migrated.
    #[error(transparent)]
    Storage(#[from] flashsale_storage::StorageError),
    /// The queue could not be opened (journal replay, NATS connection or stream).
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Builds the order service and starts its workers, which run until `stops.workers`.
pub async fn assemble(
    config: &OrderConfig,
    parts: OrderParts,
    stops: &Stops,
) -> Result<Assembled<OrderService>, AssembleError> {
    let shutdown = &stops.workers;
    config.check().map_err(AssembleError::Config)?;
    parts.db.migrate(crate::schema).await?;
    let store: Arc<dyn OrderStore> = Arc::new(SqlOrderStore::new(parts.db.clone()));
    let timeout_ms = flashsale_kernel::duration::secs_as_ms_i64(config.payment_timeout_secs);
    if config.queue == QueueBackend::Direct {
        adopt_journal(config, &parts.db, &*store, timeout_ms).await?;
    }
    let queue = queue::open(config, parts.db, Arc::clone(&store)).await?;
    let mut workers = Workers::new();
    if config.queue != QueueBackend::Direct {
        workers.push(Worker::spawn(
            "order.consumer",
            crate::consumer::run(
                Arc::clone(&queue),
                Arc::clone(&store),
                config.batch_max,
                timeout_ms,
                shutdown.clone(),
            ),
        ));
    }
    workers.push(Worker::spawn(
        "order.expiry",
        crate::expiry::run(
            Arc::clone(&store),
            Arc::clone(&parts.releaser),
            Duration::from_millis(config.expiry_interval_ms.max(10)),
            Arc::clone(&parts.clock),
            shutdown.clone(),
        ),
    ));
    Ok(Assembled {
        service: OrderService::new(queue, store, parts.releaser),
        workers,
    })
}

/// Writes as orders the requests a journal of an earlier run still holds (a shop that moved
/// from `queue = "journal"` to the direct intake, or a crash in between): the direct intake
/// has no consumer, so nothing else would.
async fn adopt_journal(
    config: &OrderConfig,
    db: &Database,
    store: &dyn OrderStore,
    payment_timeout_ms: i64,
) -> Result<(), QueueError> {
    let journal = queue::JournalQueue::open(
        db.clone(),
        config.journal_batch_max,
        config.max_accept_age(),
    )
    .await?;
    if journal.depth() > 0 {
        tracing::info!(
            requests = journal.depth(),
            "writing the order journal of an earlier run as orders"
        );
        crate::consumer::drain(&*journal, store, config.batch_max, payment_timeout_ms).await;
    }
    Ok(())
}
