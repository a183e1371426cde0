//! Configuration of the gateway.

use flashsale_limits::Rate;

pub use crate::batch::BatchConfig;
use ipnet::IpNet;
use serde::Deserialize;

pub use flashsale_limits::LimitsBackend;

/// Anti-brush limits per route (article defaults). A rule with `limit = 0` is off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Where the counters live.
    pub backend: LimitsBackend,
    /// Buy attempts per (user, sale).
    pub buy_per_user_sale: Rate,
    /// Buy attempts per client IP.
    pub buy_per_ip: Rate,
    /// Login attempts per client IP (credential stuffing from one address).
    pub login_per_ip: Rate,
    /// Login attempts per account, whoever sends them (password guessing on one account).
    pub login_per_account: Rate,
    /// Registrations per client IP (each one costs an argon2 hash).
    pub register_per_ip: Rate,
    /// How the Redis backend's concurrent decisions share script calls (`max_size = 1`: each
    /// decision its own call, sent directly).
    pub batch: BatchConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::default(),
            buy_per_user_sale: Rate::per_second(3),
            buy_per_ip: Rate::per_minute(10),
            login_per_ip: Rate::per_minute(20),
            login_per_account: Rate::per_minute(5),
            register_per_ip: Rate::per_minute(10),
            batch: BatchConfig::default(),
        }
    }
}

impl LimitsConfig {
    /// Every rule off (load tests of other paths, durability tests).
    pub fn off() -> Self {
        let off = Rate {
            limit: 0,
            period_ms: 1_000,
        };
        Self {
            backend: LimitsBackend::Memory,
            buy_per_user_sale: off,
            buy_per_ip: off,
            login_per_ip: off,
            login_per_account: off,
            register_per_ip: off,
            batch: BatchConfig::default(),
        }
    }
}

/// Settings of the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Peers whose `X-Forwarded-For` is believed. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Time budget of one request in milliseconds, carried to the services as gRPC deadlines.
    pub budget_ms: u64,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
    /// Requests served at once; one more is shed at once with `503` and `Retry-After`
    /// (load shedding: a saturated gateway answers fast instead of growing a queue).
    pub max_in_flight: usize,
    /// How often the gateway asks the auth service for revoked sessions.
    pub revocation_poll_ms: u64,
    /// How old the last successful revocation poll may be before cached sessions are no longer
    /// trusted (bounds how long a revoked token keeps working on this gateway).
    pub revocation_max_staleness_ms: u64,
    /// How long "no such sale" is remembered.
    pub missing_sale_cache_ms: u64,
    /// How long a sold-out sale is answered locally before asking the inventory again.
    pub sold_out_cache_ms: u64,
    /// Refuse a token presented from another IP or User-Agent than the one it was issued to.
    pub bind_sessions: bool,
    /// Anti-brush limits.
    pub limits: LimitsConfig,
    /// How the buy path's inventory and order calls are batched under load ([`crate::batch`]).
    pub batch: BatchConfig,
    /// Follow the inventory's stock events (its `WatchStock` stream, any stock backend):
    /// sold-out sales are then answered locally until restocked.
    pub follow_stock_events: bool,
    /// How long a sold-out pushed by a stock event is believed unless pushed again (the
    /// inventory repeats it on every buy it refuses for want of stock).
    pub pushed_sold_out_ms: u64,
    /// Benchmarking only: customer requests are NOT authenticated — the user id is read from
    /// the bearer token without checking its signature, expiry, session or client binding
    /// (admin routes still authenticate). `flashsale bench --compare-auth-off` uses it to
    /// measure what authentication costs; `flashsale serve` refuses to start with it.
    pub insecure_skip_auth: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            budget_ms: 500,
            body_limit_bytes: 16 * 1024,
            max_in_flight: 10_000,
            revocation_poll_ms: 250,
            revocation_max_staleness_ms: 1000,
            missing_sale_cache_ms: 1000,
            sold_out_cache_ms: 200,
            bind_sessions: true,
            limits: LimitsConfig::default(),
            batch: BatchConfig::default(),
            follow_stock_events: false,
            pushed_sold_out_ms: 5_000,
            insecure_skip_auth: false,
        }
    }
}

impl GatewayConfig {
    /// Checks the rules that concern this section alone (the binary checks those that span
    /// sections, such as the order queue's age limit against `budget_ms`).
    pub fn check(&self) -> Result<(), String> {
        if self.revocation_max_staleness_ms <= self.revocation_poll_ms {
            return Err(format!(
                "gateway.revocation_max_staleness_ms ({}) must exceed gateway.revocation_poll_ms ({})",
                self.revocation_max_staleness_ms, self.revocation_poll_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staleness_bound_within_one_poll_is_refused() {
        assert!(GatewayConfig::default().check().is_ok());
        let config = GatewayConfig {
            revocation_max_staleness_ms: 250,
            revocation_poll_ms: 250,
            ..GatewayConfig::default()
        };
        assert!(config.check().is_err());
    }
}
