//! A Redis for one integration test: the real server, under a key prefix of its own.
//!
//! [`TestRedis::start`] connects to `FLASHSALE_TEST_REDIS_URL` (default the local server). When
//! the server cannot be reached the test kit's rule applies ([`flashsale_testkit::server`]): the
//! test is skipped with a message — except under `CI=true`, where a missing server is a failure,
//! never a silent pass. [`TestRedis::cleanup`] deletes every
//! key the test wrote, so tests leave nothing behind and run in parallel without seeing each
//! other.

use redis::AsyncCommands;

use crate::{Redis, RedisConfig};

/// A connection whose keys are private to one test.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// The connection, under the test's prefix.
    pub redis: Redis,
    /// The configuration that reaches it (hand it to services under test).
    pub config: RedisConfig,
}

impl TestRedis {
    /// Connects under a fresh prefix; `None` (after saying why) when there is no server and
    /// this is not CI.
    ///
    /// # Panics
    /// Under `CI=true` when the server cannot be reached.
    pub async fn start() -> Option<Self> {
        let url = std::env::var("FLASHSALE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let config = RedisConfig {
            url,
            key_prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
            ..RedisConfig::default()
        };
        let redis = flashsale_testkit::server::required(
            "the test Redis",
            Redis::connect(&config).await,
            "set FLASHSALE_TEST_REDIS_URL",
        )?;
        Some(Self { redis, config })
    }

    /// Every key matching `pattern` (SCAN in large steps: the server may hold many keys of
    /// other tests and runs).
    ///
    /// # Panics
    /// When Redis fails meanwhile (a test failure anyway).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.redis.conn();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("SCAN failed: {e}"));
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Deletes every key under the test's prefix.
    ///
    /// # Panics
    /// When Redis fails meanwhile (a test failure anyway).
    pub async fn cleanup(&self) {
        let keys = self.keys(&format!("{}*", self.config.key_prefix)).await;
        let mut conn = self.redis.conn();
        for chunk in keys.chunks(500) {
            let _: () = conn
                .del(chunk)
                .await
                .unwrap_or_else(|e| panic!("DEL failed: {e}"));
        }
    }
}
