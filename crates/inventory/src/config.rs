//! Configuration of the inventory service.

use serde::Deserialize;

/// Where the stock counters and reservations are kept.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StockBackend {
    /// In the inventory process (one inventory instance).
    #[default]
    Memory,
    /// In Redis (the top-level `redis` section), shared by every inventory instance.
    Redis,
}

/// Settings of the inventory service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InventoryConfig {
    /// How long a reservation may wait for its order to reach the database before its stock
    /// is given back, in milliseconds. Must be far longer than any request budget.
    pub reservation_grace_ms: u64,
    /// How often reconciliation runs, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// Where stock lives.
    pub stock: StockBackend,
    /// With shared stock: how often the list of sales is re-read, to learn sales created by
    /// other inventory instances, in milliseconds.
    pub catalog_refresh_ms: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            reservation_grace_ms: 30_000,
            reconcile_interval_ms: 5_000,
            stock: StockBackend::default(),
            catalog_refresh_ms: 1_000,
        }
    }
}
