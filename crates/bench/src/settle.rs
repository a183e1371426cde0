//! Waiting for accepted orders to be persisted: the order queue's journal drains into `orders`.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::BenchError;

/// Longest wait for the queue to drain.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// When the orders settled.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// Orders of the sale in the database.
    pub orders: i64,
    /// Whether the queue drained within the timeout.
    pub drained: bool,
    /// When the wait ended.
    pub at: Instant,
}

/// Polls the database until no request of `sale` is left in the queue and at least
/// `accepted` orders exist.
pub async fn wait(database_url: &str, sale: i64, accepted: i64) -> Result<Settled, BenchError> {
    let db =
        flashsale_storage::connect(database_url, flashsale_storage::Durability::Process, 1).await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let result = loop {
        let (queued,): (i64,) = db
            .fetch_one(
                "SELECT COUNT(*) FROM order_queue WHERE sale_id = ?",
                &[sale.into()],
            )
            .await?;
        let (orders,): (i64,) = db
            .fetch_one(
                "SELECT COUNT(*) FROM orders WHERE sale_id = ?",
                &[sale.into()],
            )
            .await?;
        let drained = queued == 0 && orders >= accepted;
        if drained || Instant::now() >= deadline {
            break Settled {
                orders,
                drained,
                at: Instant::now(),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    db.close().await;
    Ok(result)
}
