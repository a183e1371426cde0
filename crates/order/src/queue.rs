//! The order queue: durable intake between the buy path and the order table (peak shaving).
//!
//! [`OrderQueue`] is the trait every queue backend implements (NATS JetStream plugs in behind
//! it). Its contract: `publish` returns only once the request is durable, so the `202` answered
//! after it is a promise kept; a delivered request stays in the queue until the consumer `ack`s
//! it after its own commit, and is delivered again after a crash. Consumers must therefore be
//! idempotent (the order table's keys are).
//!
//! [`nats::NatsQueue`] carries the requests on a NATS JetStream stream instead (`order.queue =
//! "nats"`).
//!
//! [`JournalQueue`] is the embedded backend: a group-commit journal in the SQL database (the
//! `order_queue` table, on whichever engine the database URL chose). Publishers hand requests to one writer task, which commits everything
//! that arrived in one transaction, then answers all of them and hands the batch to the
//! consumer. Under a rush thousands of requests share one commit.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use async_trait::async_trait;
use flashsale_storage::{with_pool, Arg, Database};
use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot, Mutex};

use flashsale_telemetry::TraceContext;

use crate::model::OrderRequest;

pub mod nats;

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The journal could not be written or read.
    #[error("order journal failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// The order tables could not be migrated.
    #[error("order tables could not be migrated: {0}")]
    Schema(#[source] flashsale_storage::StorageError),
    /// A group commit failed; every request in the batch gets the same cause.
    #[error("order journal commit failed: {0}")]
    Commit(#[source] Arc<sqlx::Error>),
    /// NATS JetStream failed (connect, publish, fetch, lookup), or did not answer in time.
    #[error("NATS JetStream queue failed: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The queue is shutting down.
    #[error("order queue is closed")]
    Closed,
    /// The request was accepted too long ago to be queued now (see [`JournalQueue::open`]).
    #[error("order request accepted {age_ms} ms ago is too old to queue")]
    Stale {
        /// How old it was.
        age_ms: i64,
    },
}

/// The queue engine `config.queue` names, opened: the journal in `db`, or the NATS stream.
/// Adding an engine means one file under `queue/`, an arm here and in [`crate::held`], and a
/// run of the queue conformance suite (`tests/queue.rs`).
pub async fn open(
    config: &crate::OrderConfig,
    db: Database,
) -> Result<Arc<dyn OrderQueue>, QueueError> {
    let max_age_ms = config.max_accept_age();
    Ok(match config.queue {
        crate::config::QueueBackend::Journal => {
            JournalQueue::open(db, config.journal_batch_max, max_age_ms).await?
        }
        crate::config::QueueBackend::Nats => {
            nats::NatsQueue::open(&config.nats, config.batch_max, max_age_ms).await?
        }
    })
}

/// A durable queue of order requests.
#[async_trait]
pub trait OrderQueue: Send + Sync + 'static {
    /// Appends a request; returns once it is durable. Publishing an order id twice is harmless.
    async fn publish(&self, request: OrderRequest) -> Result<(), QueueError>;
    /// Waits for requests and returns up to `max` of them; an empty batch means the queue closed.
    async fn next_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError>;
    /// Returns up to `max` requests that are ready now, without waiting (for draining at shutdown).
    async fn ready_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError>;
    /// Removes requests the consumer has committed.
    async fn ack(&self, order_ids: &[String]) -> Result<(), QueueError>;
    /// The user's request still in the queue under this order id, if any (to show it as
    /// `pending`).
    async fn find(&self, user_id: i64, order_id: &str) -> Result<Option<OrderRequest>, QueueError>;
    /// A user's requests still in the queue (at most `limit`).
    async fn find_for_user(
        &self,
        user_id: i64,
        limit: i64,
    ) -> Result<Vec<OrderRequest>, QueueError>;
    /// Requests in the queue, not yet acknowledged.
    fn depth(&self) -> i64;
}

type Publish = (OrderRequest, oneshot::Sender<Result<(), QueueError>>);

/// The embedded queue: a group-commit journal in the SQL database (any engine).
pub struct JournalQueue {
    db: Database,
    publish_tx: mpsc::Sender<Publish>,
    deliveries: Mutex<mpsc::UnboundedReceiver<OrderRequest>>,
    depth: Arc<AtomicI64>,
}

impl std::fmt::Debug for JournalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalQueue")
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

type JournalRow = (String, i64, i64, i64, i64, String, i64, Option<String>);

fn from_row(r: JournalRow) -> OrderRequest {
    OrderRequest {
        order_id: r.0,
        user_id: r.1,
        sale_id: r.2,
        quantity: r.3,
        price_cents: r.4,
        idempotency_key: r.5,
        accepted_at_ms: r.6,
        trace: r.7.as_deref().and_then(TraceContext::parse),
    }
}

const SELECT_JOURNAL: &str = "SELECT order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms, traceparent FROM order_queue";

impl JournalQueue {
    /// Opens the journal: requests left by a previous run are delivered again first. The writer
    /// task stops when the queue is dropped, after committing what it had.
    ///
    /// A request whose `accepted_at_ms` is more than `max_age_ms` old when its turn to be
    /// committed comes is refused ([`QueueError::Stale`]) instead: its caller has long given
    /// up, and the inventory may give its stock back once a reservation is older than its grace
    /// period. Refusing late commits is what makes that safe (grace > `max_age_ms`).
    pub async fn open(
        db: impl Into<Database>,
        batch_max: usize,
        max_age_ms: i64,
    ) -> Result<Arc<Self>, QueueError> {
        let db = db.into();
        let leftover = select_journal(&db, "ORDER BY accepted_at_ms", &[]).await?;
        let (deliver_tx, deliver_rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicI64::new(0));
        if !leftover.is_empty() {
            tracing::info!(requests = leftover.len(), "replaying the order journal");
        }
        for row in leftover {
            depth.fetch_add(1, Ordering::Relaxed);
            // The receiver is alive: it is in `deliver_rx` right here.
            let _ = deliver_tx.send(row);
        }
        let (publish_tx, publish_rx) = mpsc::channel(batch_max.max(1) * 8);
        tokio::spawn(write_journal(
            db.clone(),
            publish_rx,
            deliver_tx,
            Arc::clone(&depth),
            batch_max.max(1),
            max_age_ms,
        ));
        Ok(Arc::new(Self {
            db,
            publish_tx,
            deliveries: Mutex::new(deliver_rx),
            depth,
        }))
    }
}

/// The writer task: commits whatever publishers queued in one transaction, then answers them.
async fn write_journal(
    db: Database,
    mut publish_rx: mpsc::Receiver<Publish>,
    deliver_tx: mpsc::UnboundedSender<OrderRequest>,
    depth: Arc<AtomicI64>,
    batch_max: usize,
    max_age_ms: i64,
) {
    let mut batch: Vec<Publish> = Vec::with_capacity(batch_max);
    while publish_rx.recv_many(&mut batch, batch_max).await > 0 {
        let now = flashsale_storage::now_ms();
        let (fresh, stale): (Vec<Publish>, Vec<Publish>) = batch
            .drain(..)
            .partition(|(request, _)| now.saturating_sub(request.accepted_at_ms) <= max_age_ms);
        for (request, reply) in stale {
            let age_ms = now.saturating_sub(request.accepted_at_ms);
            tracing::warn!(order_id = %request.order_id, age_ms, "refused a stale order request");
            let _ = reply.send(Err(QueueError::Stale { age_ms }));
        }
        batch = fresh;
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = insert_journal(&db, &batch).await;
        metrics::histogram!(flashsale_telemetry::metrics::DB_LATENCY, "op" => "journal_commit")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(new) => {
                depth.fetch_add(i64::try_from(new).unwrap_or(0), Ordering::Relaxed);
                for (request, reply) in batch.drain(..) {
                    // A closed consumer is fine: the journal redelivers at the next start.
                    let _ = deliver_tx.send(request);
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "order journal commit failed");
                let cause = Arc::new(e);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(QueueError::Commit(Arc::clone(&cause))));
                }
            }
        }
        report_depth(&depth);
    }
}

fn report_depth(depth: &AtomicI64) {
    metrics::gauge!(flashsale_telemetry::metrics::QUEUE_DEPTH)
        .set(depth.load(Ordering::Relaxed) as f64);
}

/// Appends a batch in one statement; returns how many requests were new to the journal.
async fn insert_journal(db: &Database, batch: &[Publish]) -> Result<u64, sqlx::Error> {
    let (insert, skip_duplicates) = db.engine().insert_skipping_duplicates();
    with_pool!(db, pool, DB => {
        let mut qb = QueryBuilder::<DB>::new(format!(
            "{insert} order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms, traceparent) ",
        ));
        qb.push_values(batch.iter().map(|(r, _)| r), |mut b, r| {
            b.push_bind(&r.order_id)
                .push_bind(r.user_id)
                .push_bind(r.sale_id)
                .push_bind(r.quantity)
                .push_bind(r.price_cents)
                .push_bind(&r.idempotency_key)
                .push_bind(r.accepted_at_ms)
                .push_bind(r.trace.map(|t| t.to_string()));
        });
        // The order id is the journal's only unique key.
        qb.push(skip_duplicates);
        qb.build().execute(pool).await.map(|r| r.rows_affected())
    })
}

/// The journal rows `sql` (after [`SELECT_JOURNAL`], `?` placeholders) selects.
async fn select_journal(
    db: &Database,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Vec<OrderRequest>, sqlx::Error> {
    let rows: Vec<JournalRow> = db
        .fetch_all(&format!("{SELECT_JOURNAL} {sql}"), args)
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

#[async_trait]
impl OrderQueue for JournalQueue {
    async fn publish(&self, request: OrderRequest) -> Result<(), QueueError> {
        let (tx, rx) = oneshot::channel();
        self.publish_tx
            .send((request, tx))
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    async fn next_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        let mut rx = self.deliveries.lock().await;
        let mut batch = Vec::with_capacity(max);
        rx.recv_many(&mut batch, max.max(1)).await;
        Ok(batch)
    }

    async fn ready_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        let mut rx = self.deliveries.lock().await;
        let mut batch = Vec::new();
        while batch.len() < max {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&self, order_ids: &[String]) -> Result<(), QueueError> {
        if order_ids.is_empty() {
            return Ok(());
        }
        let deleted = with_pool!(&self.db, pool, DB => {
                let mut qb = QueryBuilder::<DB>::new("DELETE FROM order_queue WHERE order_id IN (");
                let mut list = qb.separated(", ");
                for id in order_ids {
                    list.push_bind(id);
                }
                qb.push(")");
                qb.build().execute(pool).await.map(|r| r.rows_affected())
        })?;
        self.depth
            .fetch_sub(i64::try_from(deleted).unwrap_or(0), Ordering::Relaxed);
        report_depth(&self.depth);
        Ok(())
    }

    async fn find(&self, user_id: i64, order_id: &str) -> Result<Option<OrderRequest>, QueueError> {
        let rows = select_journal(
            &self.db,
            "WHERE order_id = ? AND user_id = ?",
            &[order_id.into(), user_id.into()],
        )
        .await?;
        Ok(rows.into_iter().next())
    }

    async fn find_for_user(
        &self,
        user_id: i64,
        limit: i64,
    ) -> Result<Vec<OrderRequest>, QueueError> {
        Ok(select_journal(
            &self.db,
            "WHERE user_id = ? ORDER BY accepted_at_ms DESC LIMIT ?",
            &[user_id.into(), limit.into()],
        )
        .await?)
    }

    fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }
}
