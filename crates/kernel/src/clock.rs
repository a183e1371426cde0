//! Time as a dependency.
//!
//! Expiry, grace periods, TTLs and rate limits all ask "what time is it?". Code that asks a
//! [`Clock`] instead of the operating system can be tested by moving a [`ManualClock`] forward
//! by hand — an hour passes in a microsecond, and a test never waits in real seconds nor widens
//! its windows for a loaded machine. Production uses [`SystemClock`], which is the wall clock.
//!
//! Times are milliseconds since the Unix epoch (`i64`), the unit stored in every table.

use std::{
    fmt,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

/// Milliseconds since the Unix epoch by the wall clock, the time unit stored in every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(crate::duration::as_ms_i64)
        .unwrap_or(0)
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch (the wall clock: it may step when the system's time
    /// is corrected).
    fn now_ms(&self) -> i64;
    /// Time since a fixed point of this clock (its creation); never goes backwards. For
    /// intervals that must not jump with the wall clock, such as rate-limit budgets.
    fn monotonic(&self) -> Duration;
}

/// A clock shared by every part of a service.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks: the wall clock, and a monotonic clock started with it.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// The system's clocks; the monotonic reading starts now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// The system's clocks as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share one time.
#[derive(Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    /// Microseconds the clock was advanced by in all (its monotonic reading).
    advanced_us: Arc<std::sync::atomic::AtomicU64>,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: i64) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(now_ms)),
            advanced_us: Arc::default(),
        }
    }

    /// A clock showing the wall clock's time now, then standing still.
    pub fn starting_now() -> Self {
        Self::at(now_ms())
    }

    /// Moves both readings forward by `by` (the wall clock in whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = crate::duration::as_ms_i64(by);
        self.now.fetch_add(ms, Ordering::SeqCst);
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.advanced_us.fetch_add(us, Ordering::SeqCst);
    }

    /// Sets the wall-clock reading (it may go backwards: that is how a test shows a clock step
    /// to code); the monotonic reading does not move.
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`] (still moved through `self`).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now.load(Ordering::SeqCst))
            .finish()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_micros(self.advanced_us.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::at(1_000);
        let shared = clock.shared();
        assert_eq!(shared.now_ms(), 1_000);
        clock.advance(Duration::from_secs(90));
        assert_eq!(shared.now_ms(), 91_000);
        assert_eq!(shared.monotonic(), Duration::from_secs(90));
        clock.set(5);
        assert_eq!(clock.clone().now_ms(), 5);
        assert_eq!(
            shared.monotonic(),
            Duration::from_secs(90),
            "a wall step is not monotonic time"
        );
    }

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = now_ms();
        let clock = SystemClock::new();
        let seen = clock.now_ms();
        assert!(seen >= before && seen - before < 60_000, "{before} {seen}");
        let (a, b) = (clock.monotonic(), clock.monotonic());
        assert!(b >= a);
    }
}
