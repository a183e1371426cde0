//! The queue consumer: writes order requests to the order table in batches.
//!
//! It takes whatever the queue has ready (up to `batch_max`), inserts it in one statement,
//! and acknowledges the batch only after the commit. A failed write is retried with a growing
//! pause and nothing is acknowledged, so nothing is lost; a crash after the commit and before
//! the ack redelivers the batch, and the inserts skip the orders that already exist.
//! On shutdown it stops waiting and writes what is already queued before returning.
//!
//! Each batch write is one `order.persist` span (kind consumer) linked to the span that
//! accepted each request, so a buy's trace leads to the write of its order.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

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
    drain(&*queue, &*store, batch_max, payment_timeout_ms).await;
    tracing::info!(depth = queue.depth(), "order consumer stopped");
}

/// Writes what the queue has ready now, without waiting for more (at shutdown, and when the
/// direct intake adopts a journal left by an earlier run).
pub async fn drain(
    queue: &dyn OrderQueue,
    store: &dyn OrderStore,
    batch_max: usize,
    payment_timeout_ms: i64,
) {
    loop {
        match queue.ready_batch(batch_max).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => persist(queue, store, batch, payment_timeout_ms).await,
            Err(e) => {
                tracing::error!(error = %e, "order queue drain failed; the journal keeps the rest");
                break;
            }
        }
    }
}

/// The span of one batch write: a consumer span linked to the span that accepted each request
/// (when traces are recorded), so a buy's trace shows where its order was written.
fn batch_span(batch: &[OrderRequest]) -> tracing::Span {
    let span = tracing::info_span!(
        "order.persist",
        otel.kind = "consumer",
        batch_size = batch.len(),
    );
    flashsale_telemetry::span::link_all(&span, batch.iter().filter_map(|r| r.trace));
    span
}

async fn persist(
    queue: &dyn OrderQueue,
    store: &dyn OrderStore,
    batch: Vec<OrderRequest>,
    payment_timeout_ms: i64,
) {
    let span = batch_span(&batch);
    persist_batch(queue, store, batch, payment_timeout_ms)
        .instrument(span)
        .await;
}

async fn persist_batch(
    queue: &dyn OrderQueue,
    store: &dyn OrderStore,
    batch: Vec<OrderRequest>,
    payment_timeout_ms: i64,
) {
    let mut pause = Duration::from_millis(10);
    loop {
        let started = std::time::Instant::now();
        let written = store.insert_batch(&batch, payment_timeout_ms).await;
        metrics::histogram!(flashsale_telemetry::metrics::DB_LATENCY, "op" => "insert_orders")
            .record(started.elapsed().as_secs_f64());
        match written {
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
