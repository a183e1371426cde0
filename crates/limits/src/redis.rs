//! The shared limiter: every gateway charges the same keys in Redis, one round trip per decision
//! — and concurrent decisions of one gateway share it.
//!
//! One Lua script decides attempts: for each, in order, it reads every key's TAT, runs the GCRA
//! step ([`crate::gcra`], mirrored line for line), and only if all of the attempt's keys pass
//! charges them (a later attempt in the same call sees what an earlier one charged); at the end
//! it writes the new TATs, each expiring when its key is back to a full burst. Under load the
//! attempts of concurrent buyers go in one call ([`flashsale_batch`]: alone when the limiter is
//! not busy, together when its calls back up), one script run and one round trip for all. Redis runs scripts atomically, so concurrent
//! gateways cannot both spend the last unit of a budget. The clock is Redis's `TIME`, one clock
//! for every gateway. Lua numbers are doubles: microseconds since 1970 (~1.8e15) are exact
//! below 2^53, and values are written with `%.0f` so they never turn into `1.8e+15` strings.
//!
//! The script is `redis/gcra.lua` (compiled in; its header says what it reads and answers). It
//! answers an allowed attempt with `ALLOWED`, a name defined in Rust ([`ALLOWED`]) and
//! prepended to the script as `local ALLOWED = …`, never with a bare number.
//!
//! The script touches several keys, so with Redis Cluster they would need one hash slot; the
//! limiter is meant for a single Redis (or a primary with replicas).

use std::{sync::Arc, time::Duration};

use flashsale_batch::{Batch, BatchConfig, Batcher, BoxFuture};
use flashsale_redis::Redis;
use redis::Script;

use crate::{Check, Decision, LimitError};

/// The limiter's script (see its header): per attempt [`ALLOWED`] or the wait in µs.
const GCRA_SCRIPT: &str = include_str!("redis/gcra.lua");

/// The script's answer for an attempt it allowed (and charged); any other answer is the wait,
/// in µs, until the attempt would pass.
const ALLOWED: i64 = 0;

/// The answers the script gives by name, as Lua sees them: defined here, once.
const CODES: &[(&str, i64)] = &[("ALLOWED", ALLOWED)];

/// The script's full text: a `local NAME = value` line per [`CODES`] entry, then
/// [`GCRA_SCRIPT`]. A pure function of this build, so the script's SHA1 is too.
fn script_text() -> String {
    let mut text: String = CODES
        .iter()
        .map(|(name, value)| format!("local {name} = {value}\n"))
        .collect();
    text.push_str(GCRA_SCRIPT);
    text
}

/// One attempt as the script reads it: every rule's key, interval and period (µs).
type Attempt = Vec<(String, u64, u64)>;

/// Sends attempts to the script, one call for however many are queued.
struct Attempts {
    redis: Redis,
    script: Arc<Script>,
}

impl Batch for Attempts {
    type Item = Attempt;
    type Answer = Result<Decision, LimitError>;

    fn send(&self, attempts: Vec<Attempt>) -> BoxFuture<Vec<Self::Answer>> {
        let script = Arc::clone(&self.script);
        let mut conn = self.redis.conn();
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            invocation.arg(attempts.len());
            for attempt in &attempts {
                invocation.arg(attempt.len());
                for (key, interval_us, period_us) in attempt {
                    invocation.key(key).arg(interval_us).arg(period_us);
                }
            }
            // Lua numbers come back as integer replies: per attempt, ALLOWED or the wait in µs.
            match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(answers) => answers.into_iter().map(decision).collect(),
                Err(e) => attempts
                    .iter()
                    .map(|_| Err(LimitError::Redis(e.clone())))
                    .collect(),
            }
        })
    }

    fn lost() -> Self::Answer {
        Err(LimitError::Dropped)
    }
}

/// The script's answer for one attempt as a decision: [`ALLOWED`], or a wait (µs, > 0); any
/// other answer is an error.
fn decision(answer: i64) -> Result<Decision, LimitError> {
    if answer == ALLOWED {
        return Ok(Decision::Allowed);
    }
    match u64::try_from(answer) {
        Ok(wait_us) => Ok(Decision::Refused {
            retry_after: Duration::from_micros(wait_us),
        }),
        Err(_) => Err(LimitError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::UnexpectedReturnType,
            "the limiter script answered neither ALLOWED nor a wait",
            answer.to_string(),
        )))),
    }
}

/// Rate limits shared through Redis.
#[derive(Clone)]
pub struct RedisLimiter {
    redis: Redis,
    script: Arc<Script>,
    /// `None` when batching is off: every decision is sent directly.
    attempts: Option<Batcher<Attempts>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter whose keys live under `limit:` in the connection's prefix, batching its
    /// concurrent decisions as `batch` says. Call it on a tokio runtime (it starts the
    /// batching task).
    pub fn new(redis: Redis, batch: BatchConfig) -> Self {
        let script = Arc::new(Script::new(&script_text()));
        let attempts = (batch.max_size > 1).then(|| {
            Batcher::spawn(
                Attempts {
                    redis: redis.clone(),
                    script: Arc::clone(&script),
                },
                batch,
            )
        });
        Self {
            redis,
            script,
            attempts,
        }
    }

    /// An attempt as the script reads it: the rules that are on.
    fn attempt(&self, checks: &[Check<'_>]) -> Attempt {
        checks
            .iter()
            .filter(|c| c.rate.is_on())
            .map(|c| {
                (
                    self.redis.key(&format!("limit:{}", c.key)),
                    c.rate.interval_us(),
                    c.rate.period_us(),
                )
            })
            .collect()
    }

    /// Decides an attempt (see [`crate::Limiter::check`]); alone, or with the attempts other
    /// callers make at the same moment, in one round trip.
    pub async fn check(&self, checks: &[Check<'_>]) -> Result<Decision, LimitError> {
        let attempt = self.attempt(checks);
        if attempt.is_empty() {
            return Ok(Decision::Allowed);
        }
        match &self.attempts {
            Some(batcher) => batcher.call(attempt).await,
            None => self
                .direct()
                .send(vec![attempt])
                .await
                .pop()
                .unwrap_or_else(Attempts::lost),
        }
    }

    /// Sends attempts itself, bypassing the batcher.
    fn direct(&self) -> Attempts {
        Attempts {
            redis: self.redis.clone(),
            script: Arc::clone(&self.script),
        }
    }

    /// Decides several attempts in one round trip, in order, each exactly as [`Self::check`]
    /// would: all of an attempt's keys are charged or none, and a later attempt sees what an
    /// earlier one charged. (What [`Self::check`] does for concurrent callers under load.)
    pub async fn check_many(&self, attempts: &[&[Check<'_>]]) -> Vec<Result<Decision, LimitError>> {
        let count = attempts.len();
        let mut answers = self
            .direct()
            .send(attempts.iter().map(|a| self.attempt(a)).collect())
            .await;
        answers.resize_with(count, Attempts::lost);
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_answers_by_names_its_preamble_declares() {
        let text = script_text();
        for (name, value) in CODES {
            let line = format!("local {name} = {value}\n");
            assert!(text.starts_with(&line), "{name} missing from the preamble");
            assert!(
                GCRA_SCRIPT.contains(&format!("= {name}\n")),
                "the script never answers {name}"
            );
        }
        assert!(text.ends_with(GCRA_SCRIPT));
        assert!(
            !GCRA_SCRIPT.contains("answers[attempt] = 0"),
            "an answer given as a bare number"
        );
        for part in ["-- gcra: ", "-- KEYS: ", "-- ARGV: ", "-- Returns "] {
            assert!(GCRA_SCRIPT.contains(part), "the header lacks {part:?}");
        }
    }

    #[test]
    fn answers_decode_and_an_unknown_one_is_an_error() {
        assert!(matches!(decision(ALLOWED), Ok(Decision::Allowed)));
        assert!(matches!(
            decision(7),
            Ok(Decision::Refused { retry_after }) if retry_after == Duration::from_micros(7)
        ));
        assert!(matches!(decision(-1), Err(LimitError::Redis(_))));
        assert!(matches!(decision(i64::MIN), Err(LimitError::Redis(_))));
    }
}
