//! A Redis for one integration test: the real server, under a key prefix of its own.
//!
//! [`TestRedis::start`] connects to `FLASHSALE_TEST_REDIS_URL` (default the local server). When
//! the server cannot be reached the test is skipped with a message — except under `CI=true`,
//! where a missing server is a failure, never a silent pass. [`TestRedis::cleanup`] deletes every
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
        match Redis::connect(&config).await {
            Ok(redis) => Some(Self { redis, config }),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but Redis is unreachable: {e}")
            }
            Err(e) => {
                eprintln!("skipping: Redis is unreachable ({e}); set FLASHSALE_TEST_REDIS_URL");
                None
            }
        }
    }

    /// Deletes every key under the test's prefix.
    ///
    /// # Panics
    /// When Redis fails meanwhile (a test failure anyway).
    pub async fn cleanup(&self) {
        let mut conn = self.redis.conn();
        let pattern = format!("{}*", self.config.key_prefix);
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter = conn
                .scan_match::<_, String>(&pattern)
                .await
                .unwrap_or_else(|e| panic!("SCAN failed: {e}"));
            while let Some(item) = iter.next_item().await {
                keys.push(item.unwrap_or_else(|e| panic!("SCAN failed: {e}")));
            }
        }
        for chunk in keys.chunks(500) {
            let _: () = conn
                .del(chunk)
                .await
                .unwrap_or_else(|e| panic!("DEL failed: {e}"));
        }
    }
}
