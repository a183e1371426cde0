//! Configuration of the gateway.

use ipnet::IpNet;
use serde::Deserialize;

/// Anti-brush limits (article defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Buy attempts per user per sale per second.
    pub buy_per_user_sale_per_sec: u32,
    /// Buy attempts per client IP per minute.
    pub buy_per_ip_per_min: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            buy_per_user_sale_per_sec: 3,
            buy_per_ip_per_min: 10,
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            budget_ms: 500,
            body_limit_bytes: 16 * 1024,
            revocation_poll_ms: 250,
            revocation_max_staleness_ms: 1000,
            missing_sale_cache_ms: 1000,
            sold_out_cache_ms: 200,
            bind_sessions: true,
            limits: LimitsConfig::default(),
        }
    }
}
