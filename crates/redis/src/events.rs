//! Stock events pushed to every gateway: a sale just sold out, or got stock back.
//!
//! The inventory's Redis scripts publish them on [`STOCK_EVENTS`] (under the deployment's key
//! prefix) at the exact moment the remaining stock reaches 0 or leaves 0, so a gateway learns a
//! sale is sold out without asking the inventory, and forgets it as soon as a cancelled or
//! expired order gives a unit back. Pub/sub delivers at most once: a gateway that loses its
//! subscription must forget what it was told and ask the inventory again.

/// Channel name (after the key prefix).
pub const STOCK_EVENTS: &str = "stock:events";

/// One stock event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEvent {
    /// The sale's remaining stock reached 0.
    SoldOut(i64),
    /// The sale's remaining stock left 0 (a reservation was released or voided).
    Restocked(i64),
}

impl StockEvent {
    /// Parses a message as the scripts write it (`sold_out:<id>`, `restocked:<id>`).
    pub fn parse(message: &str) -> Option<Self> {
        let (kind, id) = message.split_once(':')?;
        let id = id.parse().ok()?;
        match kind {
            "sold_out" => Some(Self::SoldOut(id)),
            "restocked" => Some(Self::Restocked(id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        assert_eq!(
            StockEvent::parse("sold_out:7"),
            Some(StockEvent::SoldOut(7))
        );
        assert_eq!(
            StockEvent::parse("restocked:12"),
            Some(StockEvent::Restocked(12))
        );
        for bad in ["", "sold_out", "sold_out:x", "other:1"] {
            assert_eq!(StockEvent::parse(bad), None, "{bad:?}");
        }
    }
}
