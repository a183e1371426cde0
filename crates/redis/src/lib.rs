//! Redis plumbing shared by every flashsale service that keeps state in Redis.
//!
//! A service gets a [`Redis`] handle: one multiplexed connection ([`ConnectionManager`]) that
//! every task clones and pipelines through — concurrent callers share round trips instead of
//! each holding a socket — plus the key prefix all of its keys live under. The prefix lets
//! several deployments (or several tests running in parallel) share one Redis server without
//! seeing each other's keys.
//!
//! The connection reconnects by itself after Redis restarts; a command sent while Redis is
//! unreachable fails after [`RedisConfig::response_timeout_ms`] rather than hanging, so a caller
//! can answer its client within the request budget.

pub mod events;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use redis::{aio::ConnectionManager, RedisError};
use redis::{aio::ConnectionManagerConfig, Client};
use serde::Deserialize;

/// Where Redis is and how the service talks to it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0` (`rediss://` for TLS is not built in).
    pub url: String,
    /// Prefix of every key this deployment writes, e.g. `flashsale:`.
    pub key_prefix: String,
    /// How long one command may wait for its reply before it fails.
    pub response_timeout_ms: u64,
    /// How long opening a connection may take.
    pub connect_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "flashsale:".into(),
            response_timeout_ms: 500,
            connect_timeout_ms: 1_000,
        }
    }
}

/// Failure to reach Redis at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {source}")]
pub struct ConnectError {
    /// The URL tried (without credentials).
    pub url: String,
    /// Why.
    #[source]
    pub source: RedisError,
}

/// A shared, multiplexed Redis connection and the key prefix of its owner.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: String,
    /// Where the server is (for the connections a subscription needs of its own).
    config: RedisConfig,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, safe to log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Redis {
    /// Connects (failing if Redis cannot be reached now); later outages are retried by the
    /// connection itself.
    pub async fn connect(config: &RedisConfig) -> Result<Self, ConnectError> {
        let err = |source| ConnectError {
            url: redacted(&config.url),
            source,
        };
        let client = Client::open(config.url.as_str()).map_err(err)?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(err)?;
        tracing::info!(url = %redacted(&config.url), prefix = %config.key_prefix, "connected to Redis");
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            config: config.clone(),
        })
    }

    /// A clone of the multiplexed connection (cheap; all clones share one socket).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The full key for `name` under this owner's prefix.
    pub fn key(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + name.len());
        key.push_str(&self.prefix);
        key.push_str(name);
        key
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A new pub/sub connection to the same server, subscribed to `name` under the prefix.
    pub async fn subscribe(&self, name: &str) -> Result<redis::aio::PubSub, ConnectError> {
        let mut pubsub = subscriber(&self.config).await?;
        pubsub
            .subscribe(self.key(name))
            .await
            .map_err(|source| ConnectError {
                url: redacted(&self.config.url),
                source,
            })?;
        Ok(pubsub)
    }
}

impl Redis {
    /// What in the server's configuration can make it come back with *older* data instead of
    /// none (a snapshot restored after a crash, a lagging appendfsync) or drop single keys
    /// (eviction). The stock and session stores survive losing everything (they rebuild or start
    /// a new epoch) but not going back in time. Empty when the server is safe for them, or when
    /// it does not let us read its configuration (managed Redis): then nothing can be said.
    pub async fn durability_warnings(&self) -> Vec<String> {
        let conn = self.conn();
        let get = |name: &'static str| {
            let mut conn = conn.clone();
            async move {
                let pair: Result<Vec<String>, _> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut conn)
                    .await;
                pair.ok().and_then(|p| p.get(1).cloned())
            }
        };
        let (save, appendonly, appendfsync, eviction) = (
            get("save").await,
            get("appendonly").await,
            get("appendfsync").await,
            get("maxmemory-policy").await,
        );
        let mut warnings = Vec::new();
        if appendonly.as_deref() == Some("no") && save.as_deref().is_some_and(|s| !s.is_empty()) {
            warnings.push(
                "Redis takes RDB snapshots without an append-only file: after a crash it comes \
                 back with older stock and sessions (set save \"\" or appendonly yes with \
                 appendfsync always)"
                    .to_owned(),
            );
        }
        if appendonly.as_deref() == Some("yes") && appendfsync.as_deref() != Some("always") {
            warnings.push(
                "Redis appendfsync is not \"always\": a crash can lose the last second of writes \
                 and bring back older stock"
                    .to_owned(),
            );
        }
        if eviction.as_deref().is_some_and(|p| p != "noeviction") {
            warnings.push(
                "Redis maxmemory-policy is not noeviction: evicted stock keys would be rebuilt \
                 from the database while others survive"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// The Redis connection of one process, opened on first use and shared by every part that uses
/// Redis (stock, sessions, limits): a process whose backends are all in memory never connects.
///
/// Backends choose themselves from configuration and call [`SharedRedis::get`] only when they
/// are the Redis kind, so the code that hosts a service never needs to know which backends use
/// Redis. The first successful connection also logs what in the server's configuration is unsafe
/// for stock and sessions ([`Redis::durability_warnings`]).
#[derive(Debug, Clone)]
pub struct SharedRedis {
    config: RedisConfig,
    cell: std::sync::Arc<tokio::sync::OnceCell<Redis>>,
}

impl SharedRedis {
    /// A handle that connects to `config` when first asked.
    pub fn new(config: RedisConfig) -> Self {
        Self {
            config,
            cell: std::sync::Arc::default(),
        }
    }

    /// The connection, opened now if this is the first call; a failed attempt is retried by
    /// the next call.
    pub async fn get(&self) -> Result<Redis, ConnectError> {
        self.cell
            .get_or_try_init(|| async {
                let redis = Redis::connect(&self.config).await?;
                for warning in redis.durability_warnings().await {
                    tracing::error!(%warning, "Redis configuration unsafe for stock and sessions");
                }
                Ok(redis)
            })
            .await
            .cloned()
    }

    /// Where Redis is.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }
}

/// A pub/sub connection (its own socket: a subscribed connection can do nothing else).
pub async fn subscriber(config: &RedisConfig) -> Result<redis::aio::PubSub, ConnectError> {
    let err = |source| ConnectError {
        url: redacted(&config.url),
        source,
    };
    let client = Client::open(config.url.as_str()).map_err(err)?;
    client.get_async_pubsub().await.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redacted("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
