//! What the inventory tells every gateway about a sale's stock as it happens.
//!
//! The moment a sale's remaining stock reaches 0 the inventory says [`StockEvent::SoldOut`]
//! (and repeats it on every buy it refuses for want of stock); the moment it leaves 0 (a
//! cancelled, expired or voided reservation gave a unit back) it says
//! [`StockEvent::Restocked`]. A gateway then answers a sold-out sale locally until it is told
//! otherwise. Delivery is at most once: a listener that loses its stream must forget what it
//! was told.

/// One change of a sale's stock that a gateway acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEvent {
    /// The sale's remaining stock reached 0.
    SoldOut(i64),
    /// The sale's remaining stock left 0.
    Restocked(i64),
}

impl StockEvent {
    /// The sale it is about.
    pub fn sale_id(self) -> i64 {
        match self {
            Self::SoldOut(id) | Self::Restocked(id) => id,
        }
    }
}
