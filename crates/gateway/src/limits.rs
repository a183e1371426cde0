//! Anti-brush rate limits (article chapter 4.1): per client IP and per (user, sale).
//!
//! Both are GCRA limiters from `governor`, keyed in concurrent maps. A refused attempt is a
//! `429` with `Retry-After` (seconds until the next attempt would pass). A limit of 0 in the
//! configuration turns that limit off. These limits are per gateway process; limits shared by
//! several gateways live in Redis (a later backend behind the same check).

use std::{net::IpAddr, num::NonZeroU32};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use crate::{config::LimitsConfig, error::ApiError};

/// The gateway's rate limiters.
pub struct Limits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_user_sale: Option<DefaultKeyedRateLimiter<(i64, i64)>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// Limiters for the configured rates.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            per_ip: NonZeroU32::new(config.buy_per_ip_per_min)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            per_user_sale: NonZeroU32::new(config.buy_per_user_sale_per_sec)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one buy attempt; `429` when either limit is exceeded.
    pub fn check_buy(&self, ip: IpAddr, user_id: i64, sale_id: i64) -> Result<(), ApiError> {
        if let Some(limiter) = &self.per_ip {
            limiter
                .check_key(&ip)
                .map_err(|not_until| self.refused(&not_until))?;
        }
        if let Some(limiter) = &self.per_user_sale {
            limiter
                .check_key(&(user_id, sale_id))
                .map_err(|not_until| self.refused(&not_until))?;
        }
        Ok(())
    }

    fn refused(
        &self,
        not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> ApiError {
        let wait = not_until.wait_time_from(self.clock.now());
        metrics::counter!(flashsale_telemetry::metrics::BUY_OUTCOMES, "outcome" => "rate_limited")
            .increment(1);
        ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// Forgets keys whose limits are back to full (bounds memory); call periodically.
    pub fn prune(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
        if let Some(l) = &self.per_user_sale {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_sale_limit_passes_exactly_the_burst() {
        let limits = Limits::new(&LimitsConfig {
            buy_per_user_sale_per_sec: 3,
            buy_per_ip_per_min: 0,
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let passed = (0..100)
            .filter(|_| limits.check_buy(ip, 1, 1).is_ok())
            .count();
        assert_eq!(passed, 3);
        // Another sale, another user: their own budgets.
        assert!(limits.check_buy(ip, 1, 2).is_ok());
        assert!(limits.check_buy(ip, 2, 1).is_ok());
        let refused = limits.check_buy(ip, 1, 1).unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert!(refused.retry_after_secs.unwrap() >= 1);
    }

    #[test]
    fn per_ip_limit_spans_users() {
        let limits = Limits::new(&LimitsConfig {
            buy_per_user_sale_per_sec: 0,
            buy_per_ip_per_min: 10,
        });
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let passed = (0..50)
            .filter(|u| limits.check_buy(ip, *u, 1).is_ok())
            .count();
        assert_eq!(passed, 10);
        assert!(limits.check_buy("10.0.0.3".parse().unwrap(), 1, 1).is_ok());
    }
}
