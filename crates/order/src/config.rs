//! Configuration of the order service.

use serde::Deserialize;

/// Settings of the order service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrderConfig {
    /// Seconds an order may stay unpaid before it expires and releases its stock (default 15 min).
    pub payment_timeout_secs: u64,
    /// Most order requests the consumer writes in one transaction.
    pub batch_max: usize,
    /// Most order requests the queue journal commits in one transaction (group commit).
    pub journal_batch_max: usize,
    /// How often the expiry sweeper runs, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Oldest accepted order request (by its acceptance time) the queue still commits, in
    /// milliseconds. Must stay below the inventory's `reservation_grace_ms`.
    pub max_accept_age_ms: u64,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            payment_timeout_secs: 15 * 60,
            batch_max: 512,
            journal_batch_max: 1024,
            expiry_interval_ms: 1000,
            max_accept_age_ms: 10_000,
        }
    }
}
