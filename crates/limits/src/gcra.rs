//! The generic cell rate algorithm (GCRA), as pure arithmetic on microseconds.
//!
//! A rate of `limit` per `period` lets a burst of `limit` through at once, then one more every
//! `period / limit` (the emission interval). The whole state of a key is one number, its
//! *theoretical arrival time* (TAT): when the key would be back to an empty bucket. An attempt
//! at `now` is allowed when `max(tat, now) + interval - now <= period`; allowing it moves the
//! TAT to `max(tat, now) + interval`. A key whose TAT has passed holds no information, so it can
//! be forgotten (in Redis it simply expires).
//!
//! The Redis backend runs the same arithmetic in a Lua script (`redis.rs`); the conformance
//! suite in `tests/` holds both to the same answers.

/// Outcome of one key's GCRA step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Allowed; the key's new TAT (µs).
    Allow {
        /// The TAT to store.
        new_tat: u64,
    },
    /// Refused; the attempt would be allowed this many µs from now.
    Refuse {
        /// Wait before the same attempt would pass.
        retry_after_us: u64,
    },
}

/// One GCRA step for a key whose stored TAT is `tat` (`None`: unknown key).
pub fn step(tat: Option<u64>, now: u64, interval_us: u64, period_us: u64) -> Step {
    let start = tat.map_or(now, |t| t.max(now));
    let new_tat = start.saturating_add(interval_us);
    let ahead = new_tat - now;
    if ahead > period_us {
        Step::Refuse {
            retry_after_us: ahead - period_us,
        }
    } else {
        Step::Allow { new_tat }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn a_burst_of_limit_passes_then_one_per_interval() {
        // 3 per second: interval 333_333 µs.
        let interval = SECOND / 3;
        let mut tat = None;
        let mut passed = 0;
        for _ in 0..10 {
            if let Step::Allow { new_tat } = step(tat, 0, interval, SECOND) {
                tat = Some(new_tat);
                passed += 1;
            }
        }
        assert_eq!(passed, 3);
        let Step::Refuse { retry_after_us } = step(tat, 0, interval, SECOND) else {
            panic!("fourth attempt allowed");
        };
        assert_eq!(retry_after_us, 4 * interval - SECOND);
        // One interval later exactly one more passes.
        assert!(matches!(
            step(tat, interval, interval, SECOND),
            Step::Allow { .. }
        ));
    }

    #[test]
    fn an_idle_key_starts_over() {
        let interval = SECOND / 3;
        let tat = Some(3 * interval);
        assert_eq!(
            step(tat, 10 * SECOND, interval, SECOND),
            Step::Allow {
                new_tat: 10 * SECOND + interval
            }
        );
    }
}
