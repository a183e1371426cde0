//! `flashsale bench persist`: how fast accepted orders reach the database, without HTTP.
//!
//! Three measurements in one run, on the database `--database-url` names (a sale id of the
//! run's own; its rows are deleted afterwards):
//!
//! 1. **single-row**: `--orders / 10` orders (at most 10,000), each its own `INSERT … ON
//!    CONFLICT DO NOTHING` and commit, one after the other — the naive consumer.
//! 2. **batched**: `--orders` orders through the order store's batch insert, `--batch` rows a
//!    statement and commit — the path the order consumer takes.
//! 3. with `--nats-url`: **NATS queue → consumer**. `--orders` requests are published to a
//!    fresh JetStream stream (256 publishes in flight, each waiting for its acknowledgement),
//!    then the real consumer ([`flashsale_order::consumer::run`] over a
//!    [`NatsQueue`](flashsale_order::queue::nats::NatsQueue)) is started and timed until every
//!    order is in the table and the consumer lag is 0. The stream is deleted afterwards.
//!
//! Orders per second persisted are reported for each, and the batched and queued paths as a
//! ratio to the single-row one.

use std::{sync::Arc, time::Duration};

use flashsale_order::{
    config::NatsQueueConfig,
    model::OrderRequest,
    queue::{
        nats::{NatsQueue, NatsStream},
        OrderQueue,
    },
    store::{OrderStore, SqlOrderStore},
};
use flashsale_storage::{now_ms, Database, Durability};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

/// Longest wait for the consumer to persist everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Payment timeout written on the bench's orders (they are deleted right after).
const PAYMENT_TIMEOUT_MS: i64 = 15 * 60 * 1000;

/// Options of `flashsale bench persist`.
#[derive(Debug, Clone)]
pub struct PersistArgs {
    /// The database (`postgres://…`, `mysql://…`, `sqlite://…`).
    pub database_url: String,
    /// Orders in the batched and queued phases.
    pub orders: usize,
    /// Rows per statement in the batched phase and per consumer batch.
    pub batch: usize,
    /// NATS server for the queued phase.
    pub nats_url: Option<String>,
}

/// One phase's result.
#[derive(Debug, Clone, Serialize)]
pub struct PersistPhase {
    /// Orders persisted.
    pub orders: usize,
    /// Seconds it took.
    pub elapsed_s: f64,
    /// Orders persisted per second.
    pub orders_per_s: f64,
}

impl PersistPhase {
    fn new(orders: usize, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            orders,
            elapsed_s: secs,
            orders_per_s: orders as f64 / secs,
        }
    }
}

/// The report of `flashsale bench persist`.
#[derive(Debug, Clone, Serialize)]
pub struct PersistReport {
    /// Database engine.
    pub engine: String,
    /// One insert and commit per order.
    pub single_row: PersistPhase,
    /// The batch insert.
    pub batched: PersistPhase,
    /// Publishing the requests to JetStream (acknowledged publishes).
    pub nats_publish: Option<PersistPhase>,
    /// The consumer draining the stream into the table.
    pub nats_consumer: Option<PersistPhase>,
}

impl PersistReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let base = self.single_row.orders_per_s.max(f64::MIN_POSITIVE);
        let mut out = format!(
            "flashsale bench persist on {}\n{:<28} {:>9} {:>9} {:>12} {:>9}\n",
            self.engine, "phase", "orders", "seconds", "orders/s", "× single"
        );
        let mut row = |name: &str, p: &PersistPhase| {
            out.push_str(&format!(
                "{name:<28} {:>9} {:>9.2} {:>12.0} {:>9.1}\n",
                p.orders,
                p.elapsed_s,
                p.orders_per_s,
                p.orders_per_s / base
            ));
        };
        row("single-row inserts", &self.single_row);
        row("batched inserts", &self.batched);
        if let Some(p) = &self.nats_publish {
            row("NATS publish (acked)", p);
        }
        if let Some(p) = &self.nats_consumer {
            row("NATS → consumer → table", p);
        }
        out
    }
}

fn requests(sale_id: i64, prefix: &str, count: usize) -> Vec<OrderRequest> {
    let now = now_ms();
    (0..count)
        .map(|n| OrderRequest {
            order_id: format!("{prefix}-{n:08}"),
            user_id: i64::try_from(n).unwrap_or(i64::MAX),
            sale_id,
            quantity: 1,
            price_cents: 100,
            idempotency_key: format!("{prefix}-{n}"),
            accepted_at_ms: now,
            trace: None,
        })
        .collect()
}

fn queue_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Database(format!("NATS queue: {e}"))
}

async fn count(db: &Database, sale_id: i64) -> Result<i64, BenchError> {
    let (n,): (i64,) = db
        .fetch_one(
            "SELECT COUNT(*) FROM orders WHERE sale_id = ?",
            &[sale_id.into()],
        )
        .await?;
    Ok(n)
}

/// Runs the three phases and prints the table.
pub async fn run(args: &PersistArgs) -> Result<PersistReport, BenchError> {
    if args.orders == 0 || args.batch == 0 || args.batch > 2500 {
        return Err(BenchError::Usage(
            "--orders must be at least 1 and --batch 1..=2500".into(),
        ));
    }
    let db = flashsale_storage::connect(&args.database_url, Durability::Process, 8).await?;
    db.migrate(flashsale_order::schema).await?;
    let store = Arc::new(SqlOrderStore::new(db.clone()));
    // A sale id no real sale has (sales count up from 1), unique to the run.
    let sale_id = -now_ms();
    let run = format!("bench{:x}", now_ms());
    let result = phases(args, &db, &store, sale_id, &run).await;
    db.execute("DELETE FROM orders WHERE sale_id = ?", &[sale_id.into()])
        .await?;
    let report = result?;
    print!("{}", report.table());
    Ok(report)
}

async fn phases(
    args: &PersistArgs,
    db: &Database,
    store: &Arc<SqlOrderStore>,
    sale_id: i64,
    run: &str,
) -> Result<PersistReport, BenchError> {
    let single = requests(
        sale_id,
        &format!("{run}-s"),
        (args.orders / 10).clamp(1, 10_000),
    );
    eprintln!(
        "flashsale bench persist: {} single-row inserts",
        single.len()
    );
    let started = Instant::now();
    for r in &single {
        store
            .insert_batch(std::slice::from_ref(r), PAYMENT_TIMEOUT_MS)
            .await
            .map_err(|e| BenchError::Database(e.to_string()))?;
    }
    let single_row = PersistPhase::new(single.len(), started.elapsed());

    let batched_requests = requests(sale_id, &format!("{run}-b"), args.orders);
    eprintln!(
        "flashsale bench persist: {} orders in batches of {}",
        args.orders, args.batch
    );
    let started = Instant::now();
    for chunk in batched_requests.chunks(args.batch) {
        store
            .insert_batch(chunk, PAYMENT_TIMEOUT_MS)
            .await
            .map_err(|e| BenchError::Database(e.to_string()))?;
    }
    let batched = PersistPhase::new(args.orders, started.elapsed());

    let (nats_publish, nats_consumer) = match &args.nats_url {
        Some(url) => {
            let config = NatsQueueConfig {
                url: url.clone(),
                stream: format!("FLASHSALE_BENCH_{run}"),
                subject: format!("flashsale-bench.{run}"),
                durable: format!("bench-{run}"),
                lag_interval_ms: 20,
                ..NatsQueueConfig::default()
            };
            let before = count(db, sale_id).await?;
            let measured = through_nats(args, &config, db, store, sale_id, run, before).await;
            if let Ok(stream) = NatsStream::connect(&config).await {
                let _ = stream.delete().await;
            }
            let (p, c) = measured?;
            (Some(p), Some(c))
        }
        None => (None, None),
    };
    Ok(PersistReport {
        engine: db.engine().name().to_owned(),
        single_row,
        batched,
        nats_publish,
        nats_consumer,
    })
}

async fn through_nats(
    args: &PersistArgs,
    config: &NatsQueueConfig,
    db: &Database,
    store: &Arc<SqlOrderStore>,
    sale_id: i64,
    run: &str,
    before: i64,
) -> Result<(PersistPhase, PersistPhase), BenchError> {
    let stream = NatsStream::connect(config).await.map_err(queue_error)?;
    let queued = requests(sale_id, &format!("{run}-n"), args.orders);
    eprintln!(
        "flashsale bench persist: publishing {} requests to NATS",
        args.orders
    );
    let started = Instant::now();
    let mut publishes =
        futures::stream::iter(queued.iter().map(|r| stream.publish(r))).buffer_unordered(256);
    while let Some(published) = publishes.next().await {
        published.map_err(queue_error)?;
    }
    let publish = PersistPhase::new(args.orders, started.elapsed());

    eprintln!("flashsale bench persist: consuming into the table");
    let started = Instant::now();
    let queue: Arc<dyn OrderQueue> = NatsQueue::open(config, args.batch, i64::MAX)
        .await
        .map_err(queue_error)?;
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(flashsale_order::consumer::run(
        Arc::clone(&queue),
        Arc::clone(store) as Arc<dyn OrderStore>,
        args.batch,
        PAYMENT_TIMEOUT_MS,
        shutdown.clone(),
    ));
    let want = before + i64::try_from(args.orders).unwrap_or(i64::MAX);
    let outcome = loop {
        let stored = count(db, sale_id).await?;
        if stored >= want && queue.depth() == 0 {
            break Ok(PersistPhase::new(args.orders, started.elapsed()));
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            break Err(BenchError::Database(format!(
                "the consumer persisted {} of {} orders in {DRAIN_TIMEOUT:?}",
                stored - before,
                args.orders
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    shutdown.cancel();
    let _ = consumer.await;
    outcome.map(|consumed| (publish, consumed))
}
