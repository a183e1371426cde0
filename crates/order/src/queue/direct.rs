//! The direct intake (`order.queue = "direct"`, the default): an accepted request is written
//! straight into `orders` as a `created` order, by group commit — one durable write per order,
//! shared by every order of the batch, instead of the journal's three (journal insert, order
//! insert, journal delete).
//!
//! It keeps the [`OrderQueue`] contract that matters to the buy path: `publish` returns once
//! the order is durable, refuses a request too old to commit ([`QueueError::Stale`]), and
//! publishing an order id (or a user's idempotency key) twice makes one order. What it drops
//! is the queue between acceptance and the order table: nothing is ever delivered to a
//! consumer (`next_batch` answers an empty batch, which tells a consumer to stop), nothing
//! waits as `pending`, and the depth is always 0.
//!
//! The journal still pays where the order table is far from the buy path or slow to write (it
//! appends to a narrow table and writes orders later, in larger batches); on the embedded
//! database the direct intake is the cheaper of the two.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{
    group_commit::{self, CommitError, Publish},
    OrderQueue, QueueError,
};
use crate::{model::OrderRequest, store::OrderStore};

/// Accepted requests written as orders, by group commit.
pub struct DirectQueue {
    writer: mpsc::Sender<Publish>,
}

impl std::fmt::Debug for DirectQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectQueue").finish_non_exhaustive()
    }
}

impl DirectQueue {
    /// Writes into `store`, up to `batch_max` orders per transaction, each expiring
    /// `payment_timeout_ms` after its acceptance; refuses requests accepted more than
    /// `max_age_ms` ago (see [`super::JournalQueue::open`] for why). The writer task stops when
    /// the queue is dropped, after committing what it had.
    pub fn open(
        store: Arc<dyn OrderStore>,
        batch_max: usize,
        max_age_ms: i64,
        payment_timeout_ms: i64,
    ) -> Arc<Self> {
        let writer = group_commit::spawn(
            Orders {
                store,
                payment_timeout_ms,
            },
            batch_max,
            max_age_ms,
        );
        // Nothing ever waits here: the dashboard's queue depth reads 0, not "no data".
        metrics::gauge!(flashsale_telemetry::metrics::QUEUE_DEPTH).set(0.0);
        Arc::new(Self { writer })
    }
}

/// The direct intake's side of the group commit: rows of `orders`.
struct Orders {
    store: Arc<dyn OrderStore>,
    payment_timeout_ms: i64,
}

#[async_trait]
impl group_commit::Commit for Orders {
    const OP: &'static str = "insert_orders";

    async fn commit(&self, batch: &[OrderRequest]) -> Result<u64, CommitError> {
        Ok(self
            .store
            .insert_batch(batch, self.payment_timeout_ms)
            .await?)
    }

    fn committed(&self, new: u64, batch: Vec<OrderRequest>) {
        metrics::counter!(flashsale_telemetry::metrics::ORDERS_PERSISTED).increment(new);
        metrics::histogram!(flashsale_telemetry::metrics::PERSIST_BATCH).record(batch.len() as f64);
    }
}

#[async_trait]
impl OrderQueue for DirectQueue {
    async fn publish(&self, request: OrderRequest) -> Result<(), QueueError> {
        group_commit::publish(&self.writer, request).await
    }

    async fn next_batch(&self, _max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        // Nothing to deliver: a published request is already an order.
        Ok(Vec::new())
    }

    async fn ready_batch(&self, _max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        Ok(Vec::new())
    }

    async fn ack(&self, _order_ids: &[String]) -> Result<(), QueueError> {
        Ok(())
    }

    async fn find(
        &self,
        _user_id: i64,
        _order_id: &str,
    ) -> Result<Option<OrderRequest>, QueueError> {
        Ok(None)
    }

    async fn find_for_user(
        &self,
        _user_id: i64,
        _limit: i64,
    ) -> Result<Vec<OrderRequest>, QueueError> {
        Ok(Vec::new())
    }

    fn depth(&self) -> i64 {
        0
    }
}
