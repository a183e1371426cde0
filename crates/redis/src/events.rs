//! Stock events pushed to every gateway: a sale just sold out, or got stock back.
//!
//! The inventory's Redis scripts publish them on [`STOCK_EVENTS`] (under the deployment's key
//! prefix) at the exact moment the remaining stock reaches 0 or leaves 0; every inventory
//! instance relays what it hears there to the gateways watching it (its `WatchStock` stream), so
//! a gateway learns a sale is sold out without asking, whichever instance sold the last unit.
//! Pub/sub delivers at most once: a watcher that loses its subscription must forget what it was
//! told and ask the inventory again.

/// Channel name (after the key prefix).
pub const STOCK_EVENTS: &str = "stock:events";

pub use flashsale_kernel::StockEvent;

/// Parses a message as the scripts write it (`sold_out:<id>`, `restocked:<id>`).
pub fn parse(message: &str) -> Option<StockEvent> {
    let (kind, id) = message.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "sold_out" => Some(StockEvent::SoldOut(id)),
        "restocked" => Some(StockEvent::Restocked(id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        assert_eq!(parse("sold_out:7"), Some(StockEvent::SoldOut(7)));
        assert_eq!(parse("restocked:12"), Some(StockEvent::Restocked(12)));
        for bad in ["", "sold_out", "sold_out:x", "other:1"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
