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
//! The script touches several keys, so with Redis Cluster they would need one hash slot; the
//! limiter is meant for a single Redis (or a primary with replicas).

use std::{sync::Arc, time::Duration};

use flashsale_batch::{Batch, BatchConfig, Batcher, BoxFuture};
use flashsale_redis::Redis;
use redis::Script;

use crate::{Check, Decision, LimitError};

const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = {}
local dirty = {}
local answers = {}
local k = 1
local a = 2
for attempt = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local new = {}
  local wait = 0
  for i = 1, n do
    local key = KEYS[k]
    k = k + 1
    local interval = tonumber(ARGV[a])
    local period = tonumber(ARGV[a + 1])
    a = a + 2
    local cur = new[key] or tat[key]
    if not cur then
      local stored = redis.call('GET', key)
      cur = now
      if stored then cur = tonumber(stored) end
      tat[key] = cur
    end
    if cur < now then cur = now end
    local nt = cur + interval
    local ahead = nt - now
    if ahead > period then
      if ahead - period > wait then wait = ahead - period end
    else
      new[key] = nt
    end
  end
  if wait > 0 then
    answers[attempt] = math.ceil(wait)
  else
    for key, nt in pairs(new) do
      tat[key] = nt
      dirty[key] = true
    end
    answers[attempt] = 0
  end
end
for key in pairs(dirty) do
  local ttl = math.ceil((tat[key] - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f', tat[key]), 'PX', string.format('%.0f', ttl))
end
return answers
";

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
            // Lua numbers come back as integer replies: the wait in µs per attempt, 0 when
            // allowed.
            match invocation.invoke_async::<Vec<u64>>(&mut conn).await {
                Ok(waits) => waits.into_iter().map(|w| Ok(decision(w))).collect(),
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

fn decision(wait_us: u64) -> Decision {
    if wait_us == 0 {
        Decision::Allowed
    } else {
        Decision::Refused {
            retry_after: Duration::from_micros(wait_us),
        }
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
        let script = Arc::new(Script::new(GCRA_SCRIPT));
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
