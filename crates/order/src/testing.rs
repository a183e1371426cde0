//! What the order service's integration tests share: an accepted order request to publish
//! ([`order_request`]), and NATS JetStream for one test ([`TestNats`]).
//!
//! Each test gets a stream, subject and durable consumer of its own (`FLASHSALE_TEST_<uuid>`),
//! on the server named by `FLASHSALE_TEST_NATS_URL` (default the local server,
//! `nats://127.0.0.1:4222`), and deletes the stream when it is done ([`TestNats::cleanup`]).
//! When the server cannot be reached the test kit's rule applies ([`flashsale_testkit::server`]):
//! the test is skipped with a message — except under `CI=true`, where a missing server is a
//! failure, never a silent pass.

use crate::{config::NatsQueueConfig, model::OrderRequest, queue::nats::NatsStream};

/// An order request of `user_id`, accepted now: order id `n` (as a UUID), idempotency key
/// `key-{n}`, one unit of sale 1 at 100 cents.
pub fn order_request(user_id: i64, n: u128) -> OrderRequest {
    OrderRequest {
        order_id: uuid::Uuid::from_u128(n).to_string(),
        user_id,
        sale_id: 1,
        quantity: 1,
        price_cents: 100,
        idempotency_key: format!("key-{n}"),
        accepted_at_ms: flashsale_storage::now_ms(),
        trace: None,
    }
}

/// Default URL of the test NATS server.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A private stream on the test NATS server.
#[derive(Debug, Clone)]
pub struct TestNats {
    /// Queue settings naming this test's stream, subject and consumer (hand them to services).
    pub config: NatsQueueConfig,
}

impl TestNats {
    /// A fresh stream; `None` (after saying why) when the server cannot be reached and this is
    /// not CI.
    ///
    /// # Panics
    /// Under `CI=true` when the server cannot be reached.
    pub async fn start() -> Option<Self> {
        let url =
            std::env::var("FLASHSALE_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let config = NatsQueueConfig {
            url,
            stream: format!("FLASHSALE_TEST_{id}"),
            subject: format!("flashsale-test.{id}"),
            durable: format!("consumer-{id}"),
            // Quick lag readings for the tests that wait for the lag to reach 0.
            lag_interval_ms: 50,
            ..NatsQueueConfig::default()
        };
        let reached = NatsStream::connect(&config).await.map(drop);
        flashsale_testkit::server::required(
            &format!("the test NATS server ({})", config.url),
            reached,
            "set FLASHSALE_TEST_NATS_URL",
        )?;
        Some(Self { config })
    }

    /// Deletes the test's stream (and its consumer with it).
    ///
    /// # Panics
    /// When the stream cannot be deleted (the test would leave state behind).
    pub async fn cleanup(self) {
        let stream = NatsStream::connect(&self.config)
            .await
            .unwrap_or_else(|e| panic!("cannot reach NATS to delete the test stream: {e}"));
        stream
            .delete()
            .await
            .unwrap_or_else(|e| panic!("cannot delete the test stream: {e}"));
    }
}
