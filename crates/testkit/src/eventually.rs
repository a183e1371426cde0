//! Waiting for a condition instead of for a time: [`eventually`].
//!
//! A test that needs something to have happened (an order expired, a process is up, a metric
//! reached a value) asks for it again and again until it holds, and fails with a message naming
//! what it waited for once a deadline has passed. The pause between two probes only paces the
//! probing (it starts at a few milliseconds and grows, or is fixed with [`Eventually::every`]);
//! nothing waits a fixed time hoping that something will have happened by then.
//!
//! A probe answers with an [`Outcome`]: a `bool`, an `Option` (the value awaited, once there),
//! or a `Result` whose error says what was seen instead — the last one seen is part of the
//! failure message.

use std::{fmt::Display, future::Future, time::Duration};

use tokio::time::Instant;

/// The pause after the first probe that failed (then doubled up to [`LONGEST_PAUSE`]).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two probes, unless [`Eventually::every`] says otherwise.
const LONGEST_PAUSE: Duration = Duration::from_millis(100);
/// How long past the deadline a probe may still run before it is abandoned (and the wait fails):
/// the deadline bounds when probes start, not how long one takes, but a hung probe must not
/// hang the test.
pub const LATE_PROBE: Duration = Duration::from_secs(10);

/// What a probe answers: whether the awaited condition holds, and with which value.
pub trait Outcome {
    /// What [`eventually`] returns once the condition holds.
    type Value;

    /// `Ok(value)` when the condition holds; `Err(what was seen instead)` (empty when there is
    /// nothing to say) when it does not yet.
    ///
    /// # Errors
    /// When the condition does not hold yet.
    fn check(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();

    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;

    fn check(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;

    fn check(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// A wait for a condition, with a deadline: [`Eventually::until`]. [`eventually`] is the short
/// form.
#[derive(Debug, Clone)]
pub struct Eventually {
    what: String,
    within: Duration,
    every: Option<Duration>,
}

impl Eventually {
    /// A wait for `what` (named in the failure message: "the order to expire"), failing after
    /// `within`.
    pub fn new(what: impl Into<String>, within: Duration) -> Self {
        Self {
            what: what.into(),
            within,
            every: None,
        }
    }

    /// Probes every `interval` instead of at growing intervals (a probe that is itself
    /// rate limited, or costly).
    #[must_use]
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = Some(interval);
        self
    }

    /// Calls `probe` until its outcome holds and returns the value it holds with. The first probe
    /// always runs (even with no time to wait at all: "it must hold now"); the last one starts at
    /// the deadline. A probe still running [`LATE_PROBE`] after the deadline is abandoned.
    ///
    /// # Panics
    /// When the condition does not hold by the deadline (or a probe hangs), naming what was
    /// awaited, for how long, and what the last probe saw.
    pub async fn until<P, F, O>(self, mut probe: P) -> O::Value
    where
        P: FnMut() -> F,
        F: Future<Output = O>,
        O: Outcome,
    {
        let deadline = Instant::now() + self.within;
        let mut pause = self.every.unwrap_or(FIRST_PAUSE);
        let mut probes: u32 = 0;
        loop {
            probes += 1;
            let seen = match tokio::time::timeout_at(deadline + LATE_PROBE, probe()).await {
                Ok(outcome) => match outcome.check() {
                    Ok(value) => return value,
                    Err(seen) => seen,
                },
                Err(_) => self.fail(
                    probes,
                    &format!("the last probe was still running {LATE_PROBE:?} after the deadline"),
                ),
            };
            let now = Instant::now();
            if now >= deadline {
                self.fail(probes, &seen);
            }
            tokio::time::sleep_until((now + pause).min(deadline)).await;
            if self.every.is_none() {
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }

    fn fail(&self, probes: u32, seen: &str) -> ! {
        let Self { what, within, .. } = self;
        if seen.is_empty() {
            panic!("timed out after {within:?} waiting for {what} ({probes} probes)");
        }
        panic!(
            "timed out after {within:?} waiting for {what} ({probes} probes; last seen: {seen})"
        );
    }
}

/// Polls `probe` until its [`Outcome`] holds and returns its value; panics naming `what` when
/// it still does not hold after `within`.
///
/// ```
/// # use std::time::Duration;
/// # use flashsale_testkit::eventually;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let started = tokio::time::Instant::now();
/// let elapsed = eventually("100 ms to pass", Duration::from_secs(5), || async {
///     let elapsed = started.elapsed();
///     (elapsed >= Duration::from_millis(100)).then_some(elapsed)
/// })
/// .await;
/// assert!(elapsed >= Duration::from_millis(100));
/// # }
/// ```
///
/// # Panics
/// When the condition does not hold by the deadline (see [`Eventually::until`]).
pub async fn eventually<P, F, O>(what: impl Into<String>, within: Duration, probe: P) -> O::Value
where
    P: FnMut() -> F,
    F: Future<Output = O>,
    O: Outcome,
{
    Eventually::new(what, within).until(probe).await
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use super::*;

    /// A probe that holds from its `n`th call on, counting its calls.
    fn holds_from(n: u32) -> (Arc<AtomicU32>, impl FnMut() -> std::future::Ready<bool>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let probe = move || std::future::ready(counted.fetch_add(1, Ordering::SeqCst) + 1 >= n);
        (calls, probe)
    }

    /// The message of the panic `task` ends with.
    async fn panic_message(task: impl Future<Output = ()> + Send + 'static) -> String {
        let err = tokio::spawn(task).await.expect_err("the wait should fail");
        let payload = err.into_panic();
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_holds_at_once_is_probed_once() {
        let (calls, probe) = holds_from(1);
        let started = Instant::now();
        eventually("nothing", Duration::from_secs(1), probe).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_is_repeated_until_it_holds_and_its_value_returned() {
        let calls = AtomicU32::new(0);
        let value = eventually("the fifth call", Duration::from_secs(10), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 5).then_some(n * 10)
        })
        .await;
        assert_eq!(value, 50);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_from_a_few_milliseconds_to_a_cap() {
        let (_, probe) = holds_from(6);
        let started = Instant::now();
        eventually("the sixth call", Duration::from_secs(10), probe).await;
        // 5 + 10 + 20 + 40 + 80 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(155));
        let (calls, probe) = holds_from(u32::MAX);
        let waited = panic_message(async move {
            eventually("never", Duration::from_secs(1), probe).await;
        })
        .await;
        assert!(waited.contains("never"), "{waited}");
        // 5, 10, 20, 40, 80, then every 100 ms up to 1 s, and once at the deadline.
        assert_eq!(calls.load(Ordering::SeqCst), 15);
    }

    #[tokio::test(start_paused = true)]
    async fn every_fixes_the_interval() {
        let (calls, probe) = holds_from(4);
        let started = Instant::now();
        Eventually::new("the fourth call", Duration::from_secs(10))
            .every(Duration::from_millis(400))
            .until(probe)
            .await;
        assert_eq!(started.elapsed(), Duration::from_millis(1200));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_never_holds_fails_naming_it_and_the_last_sighting() {
        let calls = Arc::new(AtomicU32::new(0));
        let message = panic_message(async move {
            eventually("the order to expire", Duration::from_secs(2), || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { Err::<(), _>(format!("status pending (probe {n})")) }
            })
            .await;
        })
        .await;
        assert!(
            message.starts_with("timed out after 2s waiting for the order to expire ("),
            "{message}"
        );
        assert!(message.contains("last seen: status pending"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_probe_runs_at_the_deadline() {
        let started = Instant::now();
        let late = panic_message(async move {
            Eventually::new("a late condition", Duration::from_millis(1000))
                .every(Duration::from_millis(300))
                .until(|| async { false })
                .await;
        })
        .await;
        assert!(
            late.contains("(5 probes)"),
            "0, 300, 600, 900, 1000 ms: {late}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_time_to_wait_the_condition_is_probed_once_to_its_end() {
        let started = Instant::now();
        let value = eventually("a slow probe", Duration::ZERO, || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(7)
        })
        .await;
        assert_eq!(value, 7);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let message = panic_message(async {
            eventually("nothing", Duration::ZERO, || async { false }).await;
        })
        .await;
        assert!(message.contains("(1 probes)"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_fails_the_wait_a_while_after_the_deadline() {
        let started = Instant::now();
        let message = panic_message(async move {
            eventually("a hanging probe", Duration::from_secs(3), || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                true
            })
            .await;
        })
        .await;
        assert!(
            message.contains("a hanging probe") && message.contains("still running"),
            "{message}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3) + LATE_PROBE);
    }
}
