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
//! [`direct::DirectQueue`] (the default) is no queue at all: it writes each request straight
//! into `orders` by group commit, one durable write per order.
//!
//! [`JournalQueue`] is a group-commit journal in the SQL database (the `order_queue` table, on
//! whichever engine the database URL chose): the same `group_commit` writer appends each
//! batch, answers the publishers and hands the batch to the consumer.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use async_trait::async_trait;
use flashsale_storage::{with_pool, Arg, Database};
use sqlx::QueryBuilder;
use tokio::sync::{mpsc, Mutex};

use flashsale_telemetry::TraceContext;

use crate::{model::OrderRequest, store::OrderStore};
use group_commit::Publish;

pub mod direct;
mod group_commit;
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
    Commit(#[source] Arc<dyn std::error::Error + Send + Sync>),
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

/// The queue engine `config.queue` names, opened: the direct intake into `store`, the journal
/// in `db`, or the NATS stream. Adding an engine means one file under `queue/`, an arm here and
/// in [`crate::held`], and a run of the queue conformance suite (`tests/queue.rs`).
pub async fn open(
    config: &crate::OrderConfig,
    db: Database,
    store: Arc<dyn OrderStore>,
) -> Result<Arc<dyn OrderQueue>, QueueError> {
    let max_age_ms = config.max_accept_age();
    Ok(match config.queue {
        crate::config::QueueBackend::Direct => direct::DirectQueue::open(
            store,
            config.journal_batch_max,
            max_age_ms,
            flashsale_kernel::duration::secs_as_ms_i64(config.payment_timeout_secs),
        ),
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

/// The embedded queue: a group-commit journal in the SQL database (any engine).
pub struct JournalQueue {
    db: Database,
    writer: mpsc::Sender<Publish>,
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
        let writer = group_commit::spawn(
            Journal {
                db: db.clone(),
                deliver_tx,
                depth: Arc::clone(&depth),
            },
            batch_max,
            max_age_ms,
        );
        Ok(Arc::new(Self {
            db,
            writer,
            deliveries: Mutex::new(deliver_rx),
            depth,
        }))
    }
}

/// The journal's side of the group commit: rows of `order_queue`, each committed batch handed
/// to the consumer.
struct Journal {
    db: Database,
    deliver_tx: mpsc::UnboundedSender<OrderRequest>,
    depth: Arc<AtomicI64>,
}

#[async_trait]
impl group_commit::Commit for Journal {
    const OP: &'static str = "journal_commit";

    async fn commit(&self, batch: &[OrderRequest]) -> Result<u64, group_commit::CommitError> {
        Ok(insert_journal(&self.db, batch).await?)
    }

    fn committed(&self, new: u64, batch: Vec<OrderRequest>) {
        self.depth
            .fetch_add(i64::try_from(new).unwrap_or(0), Ordering::Relaxed);
        for request in batch {
            // A closed consumer is fine: the journal redelivers at the next start.
            let _ = self.deliver_tx.send(request);
        }
        report_depth(&self.depth);
    }
}

fn report_depth(depth: &AtomicI64) {
    metrics::gauge!(flashsale_telemetry::metrics::QUEUE_DEPTH)
        .set(depth.load(Ordering::Relaxed) as f64);
}

/// Appends a batch in one statement; returns how many requests were new to the journal.
async fn insert_journal(db: &Database, batch: &[OrderRequest]) -> Result<u64, sqlx::Error> {
    let (insert, skip_duplicates) = db.engine().insert_skipping_duplicates();
    with_pool!(db, pool, DB => {
        let mut qb = QueryBuilder::<DB>::new(format!(
            "{insert} order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms, traceparent) ",
        ));
        qb.push_values(batch, |mut b, r| {
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
        group_commit::publish(&self.writer, request).await
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
