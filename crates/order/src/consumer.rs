//! The queue consumer: writes order requests to the order table in batches.
//!
//! It takes whatever the queue has ready (up to `batch_max`), inserts it in one statement,
//! and acknowledges the batch only after the commit. A failed write is retried with a growing
//! pause and nothing is acknowledged, so nothing is lost; a crash after the commit and before
//! the ack redelivers the batch, and the inserts skip the orders that already exist.
//! On shutdown it stops waiting and writes what is already queued before returning.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{model::OrderRequest, queue::OrderQueue, store::OrderStore};

/// Runs the consumer until `shutdown` is cancelled (then drains) or the queue closes.
pub async fn run(
    queue: Arc<dyn OrderQueue>,
    store: Arc<dyn OrderStore>,
    batch_max: usize,
    payment_timeout_ms: i64,
    shutdown: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            batch = queue.next_batch(batch_max) => batch,
            () = shutdown.cancelled() => break,
        };
        match batch {
            Ok(batch) if batch.is_empty() => return,
            Ok(batch) => persist(&*queue, &*store, batch, payment_timeout_ms).await,
            Err(e) => {
                tracing::error!(error = %e, "order queue read failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Drain: write what is already queued, without waiting for more.
    loop {
        match queue.ready_batch(batch_max).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => persist(&*queue, &*store, batch, payment_timeout_ms).await,
            Err(e) => {
                tracing::error!(error = %e, "order queue drain failed; the journal keeps the rest");
                break;
            }
        }
    }
    tracing::info!(depth = queue.depth(), "order consumer stopped");
}

async fn persist(
    queue: &dyn OrderQueue,
    store: &dyn OrderStore,
    batch: Vec<OrderRequest>,
    payment_timeout_ms: i64,
) {
    let mut pause = Duration::from_millis(10);
    loop {
        match store.insert_batch(&batch, payment_timeout_ms).await {
            Ok(inserted) => {
                metrics::counter!(flashsale_telemetry::metrics::ORDERS_PERSISTED)
                    .increment(inserted);
                metrics::histogram!(flashsale_telemetry::metrics::PERSIST_BATCH)
                    .record(batch.len() as f64);
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "order batch write failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
    let ids: Vec<String> = batch.into_iter().map(|r| r.order_id).collect();
    if let Err(e) = queue.ack(&ids).await {
        // Not fatal: the requests are redelivered and the inserts skip them.
        tracing::warn!(error = %e, "order queue ack failed");
    }
}
