//! What the buy path remembers in this process between buys ([`BuyMemory`]): the sale cache
//! and the order ids accepted recently ([`AcceptedOrders`]).

use std::time::Duration;

use crate::sales_cache::SaleCache;

/// Order ids (as `u128`) this gateway accepted recently, so a retry of an accepted buy reaches
/// the inventory (and gets its order back) even after the sale is known sold out here.
pub type AcceptedOrders = moka::sync::Cache<u128, (), foldhash::quality::RandomState>;

/// An empty [`AcceptedOrders`]: up to a million ids, each kept 15 minutes.
pub fn accepted_orders() -> AcceptedOrders {
    moka::sync::Cache::builder()
        .max_capacity(1_000_000)
        .time_to_live(Duration::from_secs(15 * 60))
        .build_with_hasher(foldhash::quality::RandomState::default())
}

/// The gateway's memory, as the buy flow uses it.
#[derive(Debug, Clone, Copy)]
pub struct BuyMemory<'a> {
    /// Sale metadata, missing sales and sold-out flags.
    pub sales: &'a SaleCache,
    /// Order ids accepted recently.
    pub accepted: &'a AcceptedOrders,
}
