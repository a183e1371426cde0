//! The in-process limiter: every key's TAT in one map behind one short lock.
//!
//! One lock (rather than a sharded map) is what makes a multi-key decision atomic without lock
//! ordering; the critical section is a few hash lookups, far below the cost of the request
//! around it. Time is the monotonic reading of a [`flashsale_kernel::Clock`] in microseconds (the system's by
//! default; tests move a [`flashsale_kernel::ManualClock`] instead of waiting for budgets to refill).

use std::{collections::HashMap, sync::Arc};

use flashsale_kernel::{SharedClock, SystemClock};

use parking_lot::Mutex;

use crate::{
    gcra::{self, Step},
    Check, Decision,
};

/// Rate limits kept in this process.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    tats: Arc<Mutex<HashMap<String, u64, foldhash::quality::RandomState>>>,
    clock: SharedClock,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    /// An empty limiter on the system's clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// An empty limiter on `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            tats: Arc::new(Mutex::new(HashMap::default())),
            clock,
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides an attempt (see [`crate::Limiter::check`]).
    pub fn check(&self, checks: &[Check<'_>]) -> Decision {
        let now = self.now_us();
        let mut tats = self.tats.lock();
        let mut charged: Vec<(&str, u64)> = Vec::with_capacity(checks.len());
        let mut wait_us = 0;
        for check in checks.iter().filter(|c| c.rate.is_on()) {
            // The same key twice in one attempt is charged twice.
            let tat = charged
                .iter()
                .rev()
                .find(|(k, _)| *k == check.key)
                .map(|(_, t)| *t)
                .or_else(|| tats.get(check.key).copied());
            match gcra::step(tat, now, check.rate.interval_us(), check.rate.period_us()) {
                Step::Allow { new_tat } => charged.push((check.key, new_tat)),
                Step::Refuse { retry_after_us } => wait_us = wait_us.max(retry_after_us),
            }
        }
        if wait_us > 0 {
            return Decision::Refused {
                retry_after: std::time::Duration::from_micros(wait_us),
            };
        }
        for (key, tat) in charged {
            // A key seen before is updated in place: no allocation on the hot path.
            match tats.get_mut(key) {
                Some(stored) => *stored = tat,
                None => {
                    tats.insert(key.to_owned(), tat);
                }
            }
        }
        Decision::Allowed
    }

    /// Drops keys whose TAT has passed (they are back to a full burst).
    pub fn prune(&self) {
        let now = self.now_us();
        self.tats.lock().retain(|_, tat| *tat > now);
    }

    /// Number of keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.tats.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
