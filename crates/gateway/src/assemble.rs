//! The gateway, assembled from its configuration section and the process's shared parts.
//!
//! The host hands over the token keys, clients of the services, the process's Redis handle and
//! its telemetry; the rate limiter's backend (`gateway.limits.backend`) is chosen beside the
//! limiters ([`flashsale_limits::LimitsBackend::open`]); with `follow_stock_events` the
//! gateway follows the inventory's stock events (its `WatchStock` stream) while it serves.

use flashsale_kernel::SharedClock;
use flashsale_redis::SharedRedis;
use flashsale_telemetry::span_buffer::SpanBuffer;
use flashsale_token::TokenKeys;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{upstream::Upstreams, AppState, GatewayConfig};

/// What the gateway needs from the process that hosts it.
#[derive(Clone)]
pub struct GatewayParts {
    /// Verifies the bearer tokens.
    pub keys: TokenKeys,
    /// Clients of auth, inventory and order.
    pub upstreams: Upstreams,
    /// The process's Redis, connected only if the limits live there.
    pub redis: SharedRedis,
    /// Renders this process's metrics at `/metrics`.
    pub metrics: PrometheusHandle,
    /// Recent spans served at `/debug/traces/{id}`, when kept.
    pub traces: Option<SpanBuffer>,
    /// What time it is (rate-limit budgets in memory).
    pub clock: SharedClock,
}

impl std::fmt::Debug for GatewayParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayParts").finish_non_exhaustive()
    }
}

/// Why the gateway could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The section breaks one of its own rules ([`GatewayConfig::check`]).
    #[error("configuration: {0}")]
    Config(String),
    /// Limits live in Redis and Redis cannot be reached.
    #[error(transparent)]
    Redis(#[from] flashsale_redis::ConnectError),
}

/// Builds the gateway's state (on a tokio runtime: it starts the buy path's batching tasks).
pub async fn assemble(
    config: &GatewayConfig,
    parts: GatewayParts,
) -> Result<AppState, AssembleError> {
    config.check().map_err(AssembleError::Config)?;
    let limiter = config
        .limits
        .backend
        .open(&parts.redis, config.limits.batch, parts.clock)
        .await?;
    if config.insecure_skip_auth {
        tracing::warn!(
            "gateway.insecure_skip_auth is on: customer requests are NOT authenticated \
             (benchmark mode)"
        );
    }
    Ok(AppState::new(
        config.clone(),
        parts.keys,
        parts.upstreams,
        limiter,
        parts.metrics,
        parts.traces,
    ))
}
