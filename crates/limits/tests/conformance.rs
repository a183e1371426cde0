//! One behavioural suite for every limiter backend: the in-process one always, the Redis one
//! against the real server (under its own key prefix; skipped with a message when no Redis is
//! reachable, a failure under `CI=true`).
//!
//! Time: the in-process limiter runs on a [`ManualClock`] that the suite moves forward, so a
//! refill is checked to the microsecond without waiting; Redis keeps its own clock, so there
//! the suite really waits (that Redis refills on its own time is what is tested).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use flashsale_limits::{Check, Decision, Limiter, MemoryLimiter, Rate, RedisLimiter};
use flashsale_redis::testing::TestRedis;
use flashsale_testkit::ManualClock;

/// How a case lets time pass for the limiter under test.
enum Time {
    /// The in-process limiter's clock: moved by hand.
    Manual(ManualClock),
    /// Redis's own clock: a real wait.
    Real,
}

impl Time {
    async fn pass(&self, by: Duration) {
        match self {
            Self::Manual(clock) => clock.advance(by),
            Self::Real => tokio::time::sleep(by).await,
        }
    }
}

fn allowed(d: Decision) -> bool {
    d == Decision::Allowed
}

async fn exactly_the_burst_passes(limiter: Limiter, _: Time) {
    // 3 a minute: the 100 attempts below take far less than the 20 s a new unit needs, even on
    // a loaded machine (at 3/s, 100 round trips slower than 3.3 ms each let a fourth through).
    let rate = Rate::per_minute(3);
    let mut passed = 0;
    for _ in 0..100 {
        if allowed(
            limiter
                .check(&[Check {
                    key: "buy:u:1:1",
                    rate,
                }])
                .await
                .unwrap(),
        ) {
            passed += 1;
        }
    }
    assert_eq!(passed, 3);
    let Decision::Refused { retry_after } = limiter
        .check(&[Check {
            key: "buy:u:1:1",
            rate,
        }])
        .await
        .unwrap()
    else {
        panic!("a fourth attempt passed");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
    // Other keys have their own budgets.
    assert!(allowed(
        limiter
            .check(&[Check {
                key: "buy:u:1:2",
                rate
            }])
            .await
            .unwrap()
    ));
}

async fn a_refused_attempt_charges_nothing(limiter: Limiter, _: Time) {
    let ip = Check {
        key: "ip:10.0.0.1",
        rate: Rate::per_minute(10),
    };
    let user = |k| Check {
        key: k,
        rate: Rate::per_minute(1),
    };
    assert!(allowed(limiter.check(&[ip, user("u:1")]).await.unwrap()));
    // The user rule refuses: the IP budget must not be spent by these.
    for _ in 0..20 {
        assert!(!allowed(limiter.check(&[ip, user("u:1")]).await.unwrap()));
    }
    // 9 more of the IP's 10 remain, spread over other users.
    let others = [
        "u:2", "u:3", "u:4", "u:5", "u:6", "u:7", "u:8", "u:9", "u:10", "u:11",
    ];
    let mut passed = 0;
    for k in others {
        if allowed(limiter.check(&[ip, user(k)]).await.unwrap()) {
            passed += 1;
        }
    }
    assert_eq!(passed, 9);
}

async fn a_rule_that_is_off_limits_nothing(limiter: Limiter, _: Time) {
    let off = Check {
        key: "off",
        rate: Rate {
            limit: 0,
            period_ms: 1_000,
        },
    };
    for _ in 0..50 {
        assert!(allowed(limiter.check(&[off]).await.unwrap()));
    }
    assert!(allowed(limiter.check(&[]).await.unwrap()));
}

async fn the_budget_refills_at_the_rate(limiter: Limiter, time: Time) {
    // 5 per 10 s: one more every 2 s after the burst. On Redis the wait is real, so the rate
    // is slow enough that the 10 checks of the burst, and the two checks after the wait, cannot
    // straddle another refill on a loaded machine.
    let rate = Rate {
        limit: 5,
        period_ms: 10_000,
    };
    let check = [Check {
        key: "refill",
        rate,
    }];
    let mut passed = 0;
    for _ in 0..10 {
        passed += usize::from(allowed(limiter.check(&check).await.unwrap()));
    }
    assert_eq!(passed, 5);
    // Let pass the time the limiter itself announces, then exactly one more passes.
    let Decision::Refused { retry_after } = limiter.check(&check).await.unwrap() else {
        panic!("burst exceeded");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(2));
    match time {
        Time::Manual(_) => {
            // To the microsecond: not a moment early.
            time.pass(retry_after - Duration::from_micros(1)).await;
            assert!(
                !allowed(limiter.check(&check).await.unwrap()),
                "refilled early"
            );
            time.pass(Duration::from_micros(1)).await;
        }
        Time::Real => time.pass(retry_after + Duration::from_millis(20)).await,
    }
    assert!(allowed(limiter.check(&check).await.unwrap()));
    assert!(!allowed(limiter.check(&check).await.unwrap()));
}

async fn concurrent_attempts_never_exceed_the_burst(limiter: Limiter, _: Time) {
    let limiter = Arc::new(limiter);
    let rate = Rate::per_minute(25);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let mut passed = 0;
                for _ in 0..10 {
                    if allowed(limiter.check(&[Check { key: "hot", rate }]).await.unwrap()) {
                        passed += 1;
                    }
                }
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        passed += t.await.unwrap();
    }
    assert_eq!(passed, 25, "640 concurrent attempts at a burst of 25");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let clock = super::ManualClock::at(0);
                    let limiter = super::MemoryLimiter::with_clock(clock.shared());
                    super::$case(flashsale_limits::Limiter::from(limiter), super::Time::Manual(clock)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(test) = super::TestRedis::start().await else { return };
                    let limiter = super::RedisLimiter::new(test.redis.clone(), Default::default());
                    super::$case(flashsale_limits::Limiter::from(limiter), super::Time::Real).await;
                    test.cleanup().await;
                }
            )*
        }
        /// The Redis backend with batching off: every decision its own script call.
        mod redis_unbatched {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(test) = super::TestRedis::start().await else { return };
                    let off = flashsale_limits::BatchConfig { max_size: 1, ..Default::default() };
                    let limiter = super::RedisLimiter::new(test.redis.clone(), off);
                    super::$case(flashsale_limits::Limiter::from(limiter), super::Time::Real).await;
                    test.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    exactly_the_burst_passes,
    a_refused_attempt_charges_nothing,
    a_rule_that_is_off_limits_nothing,
    the_budget_refills_at_the_rate,
    concurrent_attempts_never_exceed_the_burst,
);

#[tokio::test]
async fn two_gateways_on_one_redis_share_a_budget() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    // Two limiters with their own connections: two gateway processes.
    let a = RedisLimiter::new(
        flashsale_redis::Redis::connect(&test.config).await.unwrap(),
        Default::default(),
    );
    let b = RedisLimiter::new(
        flashsale_redis::Redis::connect(&test.config).await.unwrap(),
        Default::default(),
    );
    let check = [Check {
        key: "ip:10.1.1.1",
        rate: Rate::per_minute(10),
    }];
    let mut passed = 0;
    for i in 0..40 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        passed += usize::from(allowed(limiter.check(&check).await.unwrap()));
    }
    assert_eq!(passed, 10);
    test.cleanup().await;
}

#[tokio::test]
async fn memory_prune_forgets_full_budgets_only() {
    let clock = ManualClock::at(0);
    let limiter = MemoryLimiter::with_clock(clock.shared());
    let short = Rate {
        limit: 1,
        period_ms: 1,
    };
    limiter.check(&[Check {
        key: "short",
        rate: short,
    }]);
    limiter.check(&[Check {
        key: "long",
        rate: Rate::per_minute(1),
    }]);
    assert_eq!(limiter.len(), 2);
    limiter.prune();
    assert_eq!(limiter.len(), 2, "both keys are still spent");
    // The 1 ms key is back to a full budget 1 ms later; the minute-long one is not.
    clock.advance(Duration::from_millis(1));
    limiter.prune();
    assert_eq!(limiter.len(), 1, "only the minute-long key remains");
}

/// Attempts decided in one call (what concurrent buyers' attempts become under load) are decided
/// in order, each all-or-nothing: a later attempt sees what an earlier one charged, and an attempt
/// refused by one rule charges none of its other keys.
#[tokio::test]
async fn redis_attempts_in_one_call_are_decided_in_order_each_all_or_nothing() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let limiter = RedisLimiter::new(test.redis.clone(), Default::default());
    let user = Check {
        key: "buy:u:9:1",
        rate: Rate::per_minute(2),
    };
    let ip = Check {
        key: "buy:ip:10.9.9.9",
        rate: Rate::per_minute(1),
    };
    let other_ip = Check {
        key: "buy:ip:10.9.9.8",
        rate: Rate::per_minute(5),
    };
    let decisions: Vec<Decision> = limiter
        .check_many(&[&[user], &[user], &[user, ip], &[other_ip, ip], &[]])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decisions[0], Decision::Allowed);
    assert_eq!(decisions[1], Decision::Allowed);
    assert!(
        matches!(decisions[2], Decision::Refused { .. }),
        "the user's third in a minute: {decisions:?}"
    );
    // `ip` was not charged by the refused third attempt, so the fourth passes on both keys.
    assert_eq!(decisions[3], Decision::Allowed);
    assert_eq!(decisions[4], Decision::Allowed, "no rules, nothing refused");
    // What the call charged is stored: `ip` is spent now, `other_ip` has 4 left.
    assert!(matches!(
        limiter.check(&[ip]).await.unwrap(),
        Decision::Refused { .. }
    ));
    let mut passed = 0;
    for _ in 0..10 {
        passed += usize::from(allowed(limiter.check(&[other_ip]).await.unwrap()));
    }
    assert_eq!(passed, 4);
    test.cleanup().await;
}
