//! Group commit: many publishers, one writer task, one transaction per batch.
//!
//! Publishers hand a request and a reply channel to the writer; the writer takes everything
//! that arrived (up to `batch_max`), refuses the requests too old to commit now, writes the
//! rest in one statement through a [`Commit`], and only then answers each publisher. Under a
//! rush thousands of requests share one commit, so the cost of a durable write is paid once
//! per batch rather than once per order. The journal ([`super::JournalQueue`]) and the direct
//! intake ([`super::direct::DirectQueue`]) are two [`Commit`]s over this one loop.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::QueueError;
use crate::model::OrderRequest;

/// A request on its way to the writer, with where its answer goes.
pub(crate) type Publish = (OrderRequest, oneshot::Sender<Result<(), QueueError>>);

/// Why a batch could not be committed (every request of the batch gets it).
pub(crate) type CommitError = Box<dyn std::error::Error + Send + Sync>;

/// What one group commit writes, and what becomes of a batch once it is durable.
#[async_trait]
pub(crate) trait Commit: Send + Sync + 'static {
    /// The `op` label of the commit's latency metric.
    const OP: &'static str;

    /// Writes the batch in one transaction; returns how many requests were new.
    async fn commit(&self, batch: &[OrderRequest]) -> Result<u64, CommitError>;

    /// Called with a committed batch (and how many of it were new), before the publishers are
    /// answered.
    fn committed(&self, new: u64, batch: Vec<OrderRequest>);
}

/// Starts the writer task over `commit`; it stops, after committing what it had, once every
/// sender is dropped.
pub(crate) fn spawn<C: Commit>(
    commit: C,
    batch_max: usize,
    max_age_ms: i64,
) -> mpsc::Sender<Publish> {
    let batch_max = batch_max.max(1);
    let (publish_tx, publish_rx) = mpsc::channel(batch_max * 8);
    tokio::spawn(write(commit, publish_rx, batch_max, max_age_ms));
    publish_tx
}

/// Hands one request to the writer and waits until it is durable (or refused).
pub(crate) async fn publish(
    writer: &mpsc::Sender<Publish>,
    request: OrderRequest,
) -> Result<(), QueueError> {
    let (tx, rx) = oneshot::channel();
    writer
        .send((request, tx))
        .await
        .map_err(|_| QueueError::Closed)?;
    rx.await.map_err(|_| QueueError::Closed)?
}

async fn write<C: Commit>(
    commit: C,
    mut publish_rx: mpsc::Receiver<Publish>,
    batch_max: usize,
    max_age_ms: i64,
) {
    let mut arrived: Vec<Publish> = Vec::with_capacity(batch_max);
    while publish_rx.recv_many(&mut arrived, batch_max).await > 0 {
        let now = flashsale_storage::now_ms();
        let mut batch = Vec::with_capacity(arrived.len());
        let mut replies = Vec::with_capacity(arrived.len());
        for (request, reply) in arrived.drain(..) {
            let age_ms = now.saturating_sub(request.accepted_at_ms);
            if age_ms > max_age_ms {
                tracing::warn!(order_id = %request.order_id, age_ms, "refused a stale order request");
                let _ = reply.send(Err(QueueError::Stale { age_ms }));
            } else {
                batch.push(request);
                replies.push(reply);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = commit.commit(&batch).await;
        metrics::histogram!(flashsale_telemetry::metrics::DB_LATENCY, "op" => C::OP)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(new) => {
                commit.committed(new, batch);
                for reply in replies {
                    // A publisher that stopped waiting is fine: its request is durable anyway.
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), op = C::OP, "order group commit failed");
                let cause: Arc<dyn std::error::Error + Send + Sync> = Arc::from(e);
                for reply in replies {
                    let _ = reply.send(Err(QueueError::Commit(Arc::clone(&cause))));
                }
            }
        }
    }
}
