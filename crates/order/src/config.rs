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
    /// Most order requests the direct intake or the journal commits in one transaction (group
    /// commit).
    pub journal_batch_max: usize,
    /// How often the expiry sweeper runs, in milliseconds.
    pub expiry_interval_ms: u64,
    /// Oldest accepted order request (by its acceptance time) the queue still commits, in
    /// milliseconds. Must stay below the inventory's `reservation_grace_ms`.
    pub max_accept_age_ms: u64,
    /// Where accepted order requests go: straight into `orders`, or a queue and its consumer.
    pub queue: QueueBackend,
    /// The NATS JetStream queue (`queue = "nats"`).
    pub nats: NatsQueueConfig,
}

/// The order queue's backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// No queue: accepted requests are written straight into `orders` by group commit, one
    /// durable write per order (default; see `queue::direct`).
    #[default]
    Direct,
    /// The group-commit journal in the SQL database (`order_queue` table), written to
    /// `orders` by the consumer.
    Journal,
    /// A NATS JetStream stream with a durable pull consumer.
    Nats,
}

/// Settings of the NATS JetStream order queue.
///
/// Requests are published to `<subject>.<user_id>.<order_id>` on `stream` (work-queue
/// retention, file storage, one replica), with `Nats-Msg-Id` = order id. The consumer is the
/// durable pull consumer `durable`. One order process per stream (see `queue::nats`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsQueueConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Stream name (created if missing).
    pub stream: String,
    /// Subject prefix; the stream captures `<subject>.>`.
    pub subject: String,
    /// Durable consumer name.
    pub durable: String,
    /// Longest wait for a publish acknowledgement, in milliseconds (at most the database lock
    /// wait, 10 s: the grace period rule counts on it).
    pub publish_timeout_ms: u64,
    /// How long a delivered request may stay unacknowledged before the server redelivers it.
    pub ack_wait_ms: u64,
    /// Most delivered, unacknowledged requests (the server stops delivering beyond it).
    pub max_ack_pending: i64,
    /// The stream's duplicate window for `Nats-Msg-Id`, in milliseconds.
    pub duplicate_window_ms: u64,
    /// How often the consumer lag is read and reported, in milliseconds.
    pub lag_interval_ms: u64,
}

impl Default for NatsQueueConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "FLASHSALE_ORDERS".into(),
            subject: "flashsale.orders".into(),
            durable: "order-consumer".into(),
            publish_timeout_ms: 5_000,
            ack_wait_ms: 30_000,
            max_ack_pending: 20_000,
            duplicate_window_ms: 120_000,
            lag_interval_ms: 500,
        }
    }
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self {
            payment_timeout_secs: 15 * 60,
            batch_max: 512,
            journal_batch_max: 1024,
            expiry_interval_ms: 1000,
            max_accept_age_ms: 10_000,
            queue: QueueBackend::default(),
            nats: NatsQueueConfig::default(),
        }
    }
}

impl OrderConfig {
    /// Checks the rules that concern this section alone (the binary checks those that span
    /// sections, such as the inventory's grace period against `max_accept_age_ms`).
    pub fn check(&self) -> Result<(), String> {
        // Each journal row binds 7 values and each order row 11; SQLite allows 32766 per statement.
        if self.journal_batch_max == 0
            || self.journal_batch_max > 4000
            || self.batch_max == 0
            || self.batch_max > 2500
        {
            return Err(
                "order.journal_batch_max must be 1..=4000 and order.batch_max 1..=2500".into(),
            );
        }
        // The NATS queue's publish timeout plays the part of the database lock wait (see
        // `crate::queue::nats`): with its margin it must fit in the same allowance.
        let lock_wait_ms =
            u64::try_from(flashsale_storage::BUSY_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let stale_margin_ms = u64::try_from(crate::queue::nats::STALE_MARGIN_MS).unwrap_or(0);
        if self.nats.publish_timeout_ms.saturating_add(stale_margin_ms) > lock_wait_ms {
            return Err(format!(
                "order.nats.publish_timeout_ms ({}) + {stale_margin_ms} must not exceed the database lock wait ({lock_wait_ms})",
                self.nats.publish_timeout_ms
            ));
        }
        Ok(())
    }

    /// Oldest accepted request the queue still commits, as the queues take it.
    pub fn max_accept_age(&self) -> i64 {
        flashsale_kernel::duration::ms_i64(self.max_accept_age_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_and_the_publish_timeout_are_checked() {
        assert!(OrderConfig::default().check().is_ok());
        let config = OrderConfig {
            journal_batch_max: 10_000,
            ..OrderConfig::default()
        };
        assert!(config.check().is_err());
        let config = OrderConfig {
            batch_max: 0,
            ..OrderConfig::default()
        };
        assert!(config.check().is_err());
        let mut config = OrderConfig::default();
        config.nats.publish_timeout_ms = 9_500;
        assert!(config.check().is_err());
    }
}
