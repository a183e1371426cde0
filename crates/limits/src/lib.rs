//! Rate limiting for the flashsale gateway (the article's anti-brush limits, chapter 4.1).
//!
//! A [`Limiter`] answers one question: may this attempt pass every rule that applies to it?
//! Each [`Check`] names a key (`buy:u:42:7`, `login:ip:10.0.0.1`, …) and the [`Rate`] it is held
//! to. All checks of one attempt are decided together and atomically: either every key is
//! charged, or none is and the attempt is refused with the longest wait among the keys that
//! refused it. So a shopper refused by the per-(user, sale) rule does not also spend their
//! per-IP budget.
//!
//! The algorithm is GCRA ([`gcra`]): exact bursts (`limit` at once) and smooth refill, one
//! number of state per key. Two backends, chosen in configuration:
//! * [`MemoryLimiter`]: in this process only — a single gateway, or tests.
//! * [`RedisLimiter`]: shared by every gateway on one Redis; one Lua script per decision, so a
//!   decision is one round trip whatever the number of rules, and the clock is Redis's own
//!   (gateways with skewed clocks still agree). Under load the concurrent decisions of one
//!   gateway share a script run and its round trip ([`flashsale_batch`]).
//!
//! We keep GCRA in our own few lines rather than use `governor` because the Redis backend needs
//! the same arithmetic in Lua and both must give identical answers (one conformance suite in
//! `tests/conformance.rs` runs against both); governor also cannot charge several keys
//! all-or-nothing.

pub mod gcra;
mod memory;
mod redis;

use std::time::Duration;

pub use flashsale_batch::BatchConfig;
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;
use serde::{Deserialize, Serialize};

/// At most `limit` attempts per `period_ms`: a burst of `limit`, then one per
/// `period_ms / limit`. A `limit` of 0 turns the rule off.
///
/// In configuration a rate is written as text — `"3/s"`, `"10/min"`, `"100/h"`, `"5/250ms"`,
/// or `"off"` — or as a table `{ limit = 3, period_ms = 1000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RateSpec", into = "String")]
pub struct Rate {
    /// Attempts per period (0: unlimited).
    pub limit: u32,
    /// Length of the period in milliseconds.
    pub period_ms: u64,
}

impl Rate {
    /// `limit` per second.
    pub const fn per_second(limit: u32) -> Self {
        Self {
            limit,
            period_ms: 1_000,
        }
    }

    /// `limit` per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period_ms: 60_000,
        }
    }

    /// Whether the rule limits anything.
    pub fn is_on(self) -> bool {
        self.limit > 0 && self.period_ms > 0
    }

    /// The period in microseconds.
    fn period_us(self) -> u64 {
        self.period_ms.saturating_mul(1_000)
    }

    /// Time between two attempts once the burst is spent, in microseconds (at least 1).
    fn interval_us(self) -> u64 {
        (self.period_us() / u64::from(self.limit.max(1))).max(1)
    }
}

/// How a rate may be written in configuration.
#[derive(Deserialize)]
#[serde(untagged)]
enum RateSpec {
    Text(String),
    Table { limit: u32, period_ms: u64 },
}

/// A rate that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid rate {0:?}: write it like \"3/s\", \"10/min\", \"100/h\", \"5/250ms\" or \"off\"")]
pub struct RateParseError(String);

impl std::str::FromStr for Rate {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || RateParseError(text.to_owned());
        let t = text.trim();
        if t.eq_ignore_ascii_case("off") || t == "0" {
            return Ok(Self {
                limit: 0,
                period_ms: 1_000,
            });
        }
        let (limit, unit) = t.split_once('/').ok_or_else(err)?;
        let limit: u32 = limit.trim().parse().map_err(|_| err())?;
        let unit = unit.trim();
        let period_ms = match unit {
            "s" | "sec" | "second" => 1_000,
            "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            ms => ms
                .strip_suffix("ms")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(err)?,
        };
        Ok(Self { limit, period_ms })
    }
}

impl TryFrom<RateSpec> for Rate {
    type Error = RateParseError;

    fn try_from(spec: RateSpec) -> Result<Self, Self::Error> {
        match spec {
            RateSpec::Text(text) => text.parse(),
            RateSpec::Table { limit, period_ms } if period_ms > 0 => Ok(Self { limit, period_ms }),
            RateSpec::Table { limit, period_ms } => {
                Err(RateParseError(format!("{limit} per {period_ms} ms")))
            }
        }
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> Self {
        if !rate.is_on() {
            return "off".into();
        }
        match rate.period_ms {
            1_000 => format!("{}/s", rate.limit),
            60_000 => format!("{}/min", rate.limit),
            3_600_000 => format!("{}/h", rate.limit),
            ms => format!("{}/{ms}ms", rate.limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_written_as_text_or_tables() {
        for (text, limit, period_ms) in [
            ("3/s", 3, 1_000),
            ("10/min", 10, 60_000),
            (" 100 / h ", 100, 3_600_000),
            ("5/250ms", 5, 250),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(rate, Rate { limit, period_ms });
            assert_eq!(String::from(rate).parse::<Rate>().unwrap(), rate);
        }
        assert!(!"off".parse::<Rate>().unwrap().is_on());
        assert!(!"0".parse::<Rate>().unwrap().is_on());
        for bad in ["", "3", "3/day", "x/s", "3/0ms", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
        let table = Rate::try_from(RateSpec::Table {
            limit: 7,
            period_ms: 500,
        });
        assert_eq!(
            table,
            Ok(Rate {
                limit: 7,
                period_ms: 500
            })
        );
        assert!(Rate::try_from(RateSpec::Table {
            limit: 7,
            period_ms: 0
        })
        .is_err());
    }
}

/// One rule applied to one key.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// What is counted (the backend adds its own prefix).
    pub key: &'a str,
    /// How fast it may go.
    pub rate: Rate,
}

/// The answer to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every rule passed; every key was charged.
    Allowed,
    /// Some rule refused; nothing was charged.
    Refused {
        /// When the same attempt would pass.
        retry_after: Duration,
    },
}

/// The shared limiter could not decide.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    /// Redis is unreachable or failing.
    #[error("rate limiter unavailable: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The decision got no answer (the limiter is shutting down).
    #[error("rate limiter unavailable: the decision got no answer")]
    Dropped,
}

/// A rate limiter: in process or in Redis.
#[derive(Debug, Clone)]
pub enum Limiter {
    /// In-process state.
    Memory(MemoryLimiter),
    /// State shared through Redis.
    Redis(RedisLimiter),
}

impl Limiter {
    /// Decides an attempt against every check at once; rules that are off are skipped.
    pub async fn check(&self, checks: &[Check<'_>]) -> Result<Decision, LimitError> {
        match self {
            Self::Memory(m) => Ok(m.check(checks)),
            Self::Redis(r) => r.check(checks).await,
        }
    }

    /// Forgets keys that are back to a full budget (bounds memory); Redis expires them itself.
    pub fn prune(&self) {
        if let Self::Memory(m) = self {
            m.prune();
        }
    }
}

/// Where the rate limits are kept (`gateway.limits.backend`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this gateway process only.
    #[default]
    Memory,
    /// In Redis, shared by every gateway (the top-level `redis` section says where).
    Redis,
}

impl LimitsBackend {
    /// The limiter of this kind; the Redis one connects through `redis` (shared with the
    /// process's other Redis users) and shares script calls as `batch` says; the memory one
    /// refills budgets by `clock` (Redis by its own).
    pub async fn open(
        self,
        redis: &flashsale_redis::SharedRedis,
        batch: BatchConfig,
        clock: flashsale_kernel::SharedClock,
    ) -> Result<Limiter, flashsale_redis::ConnectError> {
        Ok(match self {
            Self::Memory => MemoryLimiter::with_clock(clock).into(),
            Self::Redis => RedisLimiter::new(redis.get().await?, batch).into(),
        })
    }
}

impl From<MemoryLimiter> for Limiter {
    fn from(m: MemoryLimiter) -> Self {
        Self::Memory(m)
    }
}

impl From<RedisLimiter> for Limiter {
    fn from(r: RedisLimiter) -> Self {
        Self::Redis(r)
    }
}
