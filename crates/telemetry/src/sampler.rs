//! The sampler of new traces: a share of them (`traces.sample_ratio`), and at most so many per
//! second (`traces.max_new_per_second`).
//!
//! Recording a trace costs every span of it several microseconds (building the OpenTelemetry
//! span, its attributes, handing it to the buffer or the exporter). At the rate of a flash sale
//! — tens of thousands of buys per second per gateway — recording all of them would cost more
//! than the buys themselves, and nobody reads a hundred thousand traces. The cap is a token
//! bucket: a quiet system records every new trace (the README's tour traces its one buy), a
//! rush records `max_new_per_second` of them and lets the rest go unrecorded. A trace a caller
//! already sampled (its `traceparent`) is always followed: the cap applies to roots only, and
//! the parent-based sampler around it keeps children with their root.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use opentelemetry::{
    trace::{Link, SpanKind, TraceId},
    Context, KeyValue,
};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// New traces recorded per second at most when `traces.max_new_per_second` is not set.
pub const DEFAULT_MAX_NEW_PER_SECOND: u32 = 100;

/// Tokens of the bucket: one per new trace, refilled at `per_second`, at most `per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    per_second: f64,
    tokens: f64,
    /// When `tokens` was last refilled, in seconds from an arbitrary origin.
    at_secs: f64,
}

impl Budget {
    /// A full bucket of `per_second` tokens at time `now_secs`.
    pub fn new(per_second: u32, now_secs: f64) -> Self {
        let per_second = f64::from(per_second);
        Self {
            per_second,
            tokens: per_second,
            at_secs: now_secs,
        }
    }

    /// Takes a token at `now_secs` (seconds, never decreasing); `false` when none is left.
    pub fn take(&mut self, now_secs: f64) -> bool {
        let elapsed = (now_secs - self.at_secs).max(0.0);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.at_secs = self.at_secs.max(now_secs);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Samples new traces with a ratio, under a per-second cap (see the module doc).
#[derive(Debug, Clone)]
pub struct CappedRatio {
    ratio: Sampler,
    origin: Instant,
    budget: Arc<Mutex<Budget>>,
}

impl CappedRatio {
    /// `ratio` of new traces (0.0–1.0), at most `per_second` of them each second.
    pub fn new(ratio: f64, per_second: u32) -> Self {
        Self {
            ratio: Sampler::TraceIdRatioBased(ratio),
            origin: Instant::now(),
            budget: Arc::new(Mutex::new(Budget::new(per_second, 0.0))),
        }
    }

    /// The sampler for a whole trace pipeline: parent-based, with this one for roots.
    pub fn parent_based(ratio: f64, per_second: u32) -> Sampler {
        Sampler::ParentBased(Box::new(Self::new(ratio, per_second)))
    }

    fn take(&self) -> bool {
        let now = self.origin.elapsed().as_secs_f64();
        // A poisoned lock only means a panic elsewhere mid-update; the bucket is still usable.
        let mut budget = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        budget.take(now)
    }
}

impl ShouldSample for CappedRatio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result =
            self.ratio
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        if result.decision == SamplingDecision::RecordAndSample && !self.take() {
            result.decision = SamplingDecision::Drop;
            result.attributes.clear();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gets_the_cap_then_the_refill_rate() {
        let mut budget = Budget::new(100, 10.0);
        let burst = (0..1000).filter(|_| budget.take(10.0)).count();
        assert_eq!(burst, 100, "a full bucket holds one second's worth");
        // Half a second later: half a second's worth, not more.
        let later = (0..1000).filter(|_| budget.take(10.5)).count();
        assert_eq!(later, 50);
        // Long idle: full again, never above the cap.
        let rested = (0..1000).filter(|_| budget.take(100.0)).count();
        assert_eq!(rested, 100);
        // A clock that goes backwards takes nothing it has not earned.
        assert!(!budget.take(99.0));
    }

    #[test]
    fn a_cap_of_zero_records_no_new_trace() {
        let mut budget = Budget::new(0, 0.0);
        assert!(!(0..10).any(|i| budget.take(f64::from(i))));
    }

    #[test]
    fn the_sampler_drops_roots_beyond_the_cap_and_keeps_the_ratio_below_it() {
        let sample = |sampler: &CappedRatio, n: u128| {
            sampler
                .should_sample(None, TraceId::from(n), "root", &SpanKind::Server, &[], &[])
                .decision
        };
        let started = Instant::now();
        let capped = CappedRatio::new(1.0, 5);
        let recorded = (1..=50)
            .filter(|n| sample(&capped, *n) == SamplingDecision::RecordAndSample)
            .count();
        // The bucket, plus what refilled while the calls ran (nothing, unless the machine
        // stalled).
        let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
        assert!(
            (5..=5 + refilled).contains(&recorded),
            "{recorded} recorded"
        );
        let never = CappedRatio::new(0.0, 1000);
        assert!((1..=50).all(|n| sample(&never, n) == SamplingDecision::Drop));
    }
}
