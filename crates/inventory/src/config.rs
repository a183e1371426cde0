//! Configuration of the inventory service.

use serde::Deserialize;

/// Settings of the inventory service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InventoryConfig {
    /// How long a reservation may wait for its order to reach the database before its stock
    /// is given back, in milliseconds. Must be far longer than any request budget.
    pub reservation_grace_ms: u64,
    /// How often reconciliation runs, in milliseconds.
    pub reconcile_interval_ms: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            reservation_grace_ms: 30_000,
            reconcile_interval_ms: 5_000,
        }
    }
}
