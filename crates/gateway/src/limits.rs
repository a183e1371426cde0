//! Anti-brush rate limits (article chapter 4.1): which rules apply to which route.
//!
//! * buy: per (user, sale) — 3/s by default — and per client IP — 10/min;
//! * login: per client IP — 20/min — and per account — 5/min — against credential stuffing and
//!   password guessing (an account's budget is keyed by a hash of its normalised email, so an
//!   unknown email is throttled exactly like a known one: no enumeration through limits);
//! * register: per client IP — 10/min — since each one costs an argon2 hash.
//!
//! The rules of one attempt are decided together by a [`Limiter`] (in this process, or in Redis
//! so that every gateway shares the counters). A refused attempt is a `429` with `Retry-After`
//! (whole seconds, rounded up). If the shared limiter cannot be reached the attempt is refused
//! with `503` and `Retry-After: 1`: the limits protect the sale's fairness, and silently
//! dropping them while Redis is down would hand the sale to the bots.

use std::{net::IpAddr, time::Duration};

use flashsale_limits::{Check, Decision, Limiter};
use sha2::{Digest, Sha256};

use crate::{config::LimitsConfig, error::ApiError};

/// The gateway's rate limits.
#[derive(Debug, Clone)]
pub struct Limits {
    limiter: Limiter,
    config: LimitsConfig,
}

/// Which route an attempt was refused on (metric label).
#[derive(Debug, Clone, Copy)]
enum Route {
    Buy,
    Login,
    Register,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Login => "login",
            Self::Register => "register",
        }
    }
}

impl Limits {
    /// The configured rules over a limiter backend.
    pub fn new(limiter: Limiter, config: LimitsConfig) -> Self {
        Self { limiter, config }
    }

    async fn decide(&self, route: Route, checks: &[Check<'_>]) -> Result<(), ApiError> {
        match self.limiter.check(checks).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Refused { retry_after }) => {
                metrics::counter!(flashsale_telemetry::metrics::RATE_LIMITED, "route" => route.as_str())
                    .increment(1);
                Err(ApiError::rate_limited(whole_seconds(retry_after)))
            }
            Err(e) => {
                tracing::error!(error = %e, route = route.as_str(), "rate limiter unavailable");
                Err(ApiError::limiter_unavailable())
            }
        }
    }

    /// Counts one buy attempt.
    pub async fn check_buy(&self, ip: IpAddr, user_id: i64, sale_id: i64) -> Result<(), ApiError> {
        let ip_key = format!("buy:ip:{ip}");
        let user_key = format!("buy:u:{user_id}:{sale_id}");
        self.decide(
            Route::Buy,
            &[
                Check {
                    key: &ip_key,
                    rate: self.config.buy_per_ip,
                },
                Check {
                    key: &user_key,
                    rate: self.config.buy_per_user_sale,
                },
            ],
        )
        .await
    }

    /// Counts one login attempt for `email` (as typed; normalised here) from `ip`.
    pub async fn check_login(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        let ip_key = format!("login:ip:{ip}");
        let account_key = format!("login:acct:{}", account_tag(email));
        self.decide(
            Route::Login,
            &[
                Check {
                    key: &ip_key,
                    rate: self.config.login_per_ip,
                },
                Check {
                    key: &account_key,
                    rate: self.config.login_per_account,
                },
            ],
        )
        .await
    }

    /// Counts one registration from `ip`.
    pub async fn check_register(&self, ip: IpAddr) -> Result<(), ApiError> {
        let ip_key = format!("register:ip:{ip}");
        self.decide(
            Route::Register,
            &[Check {
                key: &ip_key,
                rate: self.config.register_per_ip,
            }],
        )
        .await
    }

    /// Forgets idle keys of the in-process backend; call periodically.
    pub fn prune(&self) {
        self.limiter.prune();
    }
}

/// Whole seconds to wait, rounded up (what `Retry-After` carries).
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The account an email names, as a key that does not spell the email out.
fn account_tag(email: &str) -> String {
    let normalised = flashsale_kernel::credentials::normalize_email(email)
        .unwrap_or_else(|_| email.trim().to_lowercase());
    let digest = Sha256::digest(normalised.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_limits::{MemoryLimiter, Rate};

    fn limits(config: LimitsConfig) -> Limits {
        Limits::new(MemoryLimiter::new().into(), config)
    }

    #[tokio::test]
    async fn buy_limits_are_per_user_and_sale_and_per_ip() {
        let limits = limits(LimitsConfig {
            buy_per_ip: Rate::per_minute(5),
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut passed = 0;
        for _ in 0..100 {
            passed += usize::from(limits.check_buy(ip, 1, 1).await.is_ok());
        }
        assert_eq!(passed, 3, "3 per second per (user, sale)");
        let refused = limits.check_buy(ip, 1, 1).await.unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert_eq!(refused.retry_after_secs, Some(1));
        // The IP had 5 per minute and spent 3.
        assert!(limits.check_buy(ip, 2, 1).await.is_ok());
        assert!(limits.check_buy(ip, 3, 1).await.is_ok());
        assert!(limits.check_buy(ip, 4, 1).await.is_err());
        assert!(limits
            .check_buy("10.0.0.2".parse().unwrap(), 4, 1)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn login_is_throttled_per_account_whatever_the_spelling_or_the_ip() {
        let limits = limits(LimitsConfig::default());
        let mut passed = 0;
        for i in 0..20u8 {
            let ip = IpAddr::from([10, 0, 1, i]);
            let email = if i % 2 == 0 {
                "Victim@Example.com"
            } else {
                " victim@example.com "
            };
            passed += usize::from(limits.check_login(ip, email).await.is_ok());
        }
        assert_eq!(passed, 5, "5 per minute per account");
        // Another account from the same addresses is unaffected.
        assert!(limits
            .check_login(IpAddr::from([10, 0, 1, 0]), "other@example.com")
            .await
            .is_ok());
    }

    #[test]
    fn account_tags_hide_the_email() {
        let tag = account_tag("ann@example.com");
        assert_eq!(tag, account_tag(" ANN@example.com"));
        assert!(!tag.contains("ann"));
        assert_eq!(tag.len(), 24);
    }
}
