//! Retrying idempotent calls within a deadline.
//!
//! Only calls that may safely run twice are retried (reads; `Reserve`, `Submit` and `Release`,
//! which are idempotent per order id), only after failures that say the instance could not
//! take the call ([`retryable`]), and only while the budget still holds the backoff and a
//! useful attempt ([`next_delay`]). Backoff is "full jitter": a random delay up to an
//! exponentially growing cap, so callers that failed together do not retry together.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Retries after the first attempt.
pub const MAX_RETRIES: u32 = 2;
/// Cap of the first backoff; doubles with each retry.
const BASE: Duration = Duration::from_millis(10);
/// Least time an attempt must have left to be worth sending.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Whether a failed call may be retried on another instance: it was not taken
/// (`UNAVAILABLE`: no connection, instance going away) or shed (`RESOURCE_EXHAUSTED`).
pub fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
    )
}

/// The delay before retry number `retry` (1-based), or `None` when no retry fits before
/// `deadline` (or the retries are used up).
pub fn next_delay(retry: u32, deadline: Instant) -> Option<Duration> {
    if retry == 0 || retry > MAX_RETRIES {
        return None;
    }
    let cap = BASE * 2u32.saturating_pow(retry - 1);
    let delay = rand::rng().random_range(Duration::ZERO..=cap);
    let left = deadline.saturating_duration_since(Instant::now());
    (left > delay + MIN_ATTEMPT).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_fit_the_budget_and_stop_after_the_limit() {
        let far = Instant::now() + Duration::from_secs(5);
        for retry in 1..=MAX_RETRIES {
            let delay = next_delay(retry, far).unwrap_or(Duration::MAX);
            assert!(delay <= BASE * 2u32.pow(retry - 1), "{delay:?}");
        }
        assert_eq!(next_delay(MAX_RETRIES + 1, far), None);
        assert_eq!(next_delay(0, far), None);
        // Not enough time left for another attempt.
        assert_eq!(next_delay(1, Instant::now() + MIN_ATTEMPT), None);
        assert!(retryable(&tonic::Status::unavailable("x")));
        assert!(retryable(&tonic::Status::resource_exhausted("x")));
        assert!(!retryable(&tonic::Status::deadline_exceeded("x")));
        assert!(!retryable(&tonic::Status::internal("x")));
    }
}
