//! The port between the order side and the inventory: which accepted orders hold stock.
//!
//! The inventory rebuilds its stock counters from the truth — every order the order service
//! accepted, whether already written as an order or still waiting in its queue — and asks which
//! order ids that side knows before it voids a reservation. Where that truth lives (the order
//! tables, a journal table, a NATS stream) is the order service's business: it implements
//! [`HeldStock`] for each of its queue engines, and the host hands the implementation to the
//! inventory. The inventory never reads the order service's tables or status strings.

use std::fmt;

use async_trait::async_trait;

/// A unit of stock held for an order, as the order side records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReservation {
    /// Order id.
    pub order_id: String,
    /// Sale.
    pub sale_id: i64,
    /// Buyer.
    pub user_id: i64,
    /// Units held.
    pub quantity: i64,
    /// True when the order ended unpaid (cancelled/expired) and its stock is back.
    pub released: bool,
}

/// The order side could not answer (its database or queue failed); the cause is kept for logs.
#[derive(Debug, thiserror::Error)]
#[error("order records unavailable: {0}")]
pub struct HeldStockError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl HeldStockError {
    /// Wraps any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

/// What the order side knows about stock held by accepted orders.
#[async_trait]
pub trait HeldStock: Send + Sync + fmt::Debug + 'static {
    /// Every accepted order, written or still queued, once each: one consistent view in which
    /// an order moving from the queue to the order table is seen at least once, never missed.
    async fn reservations(&self) -> Result<Vec<StoredReservation>, HeldStockError>;
    /// Which of these order ids the order side knows (as an order or a queued request).
    async fn known(&self, order_ids: &[String]) -> Result<Vec<String>, HeldStockError>;
}
