//! The shared limiter: every gateway charges the same keys in Redis, one round trip each.
//!
//! One Lua script decides a whole attempt: it reads every key's TAT, runs the GCRA step
//! ([`crate::gcra`], mirrored line for line), and only if all pass writes the new TATs, each
//! expiring when its key is back to a full burst. Redis runs scripts atomically, so concurrent
//! gateways cannot both spend the last unit of a budget. The clock is Redis's `TIME`, one clock
//! for every gateway. Lua numbers are doubles: microseconds since 1970 (~1.8e15) are exact
//! below 2^53, and values are written with `%.0f` so they never turn into `1.8e+15` strings.
//!
//! The script touches several keys, so with Redis Cluster they would need one hash slot; the
//! limiter is meant for a single Redis (or a primary with replicas).

use std::time::Duration;

use flashsale_redis::Redis;
use redis::Script;

use crate::{Check, Decision, LimitError};

const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local new = {}
local wait = 0
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = now
  if new[KEYS[i]] then
    tat = new[KEYS[i]]
  else
    local stored = redis.call('GET', KEYS[i])
    if stored then tat = tonumber(stored) end
  end
  if tat < now then tat = now end
  local nt = tat + interval
  local ahead = nt - now
  if ahead > period then
    if ahead - period > wait then wait = ahead - period end
  else
    new[KEYS[i]] = nt
  end
end
if wait > 0 then return math.ceil(wait) end
for key, nt in pairs(new) do
  local ttl = math.ceil((nt - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f', nt), 'PX', string.format('%.0f', ttl))
end
return 0
";

/// Rate limits shared through Redis.
#[derive(Clone)]
pub struct RedisLimiter {
    redis: Redis,
    script: Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter whose keys live under `limit:` in the connection's prefix.
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Script::new(GCRA_SCRIPT),
        }
    }

    /// Decides an attempt (see [`crate::Limiter::check`]).
    pub async fn check(&self, checks: &[Check<'_>]) -> Result<Decision, LimitError> {
        let mut invocation = self.script.prepare_invoke();
        let mut any = false;
        for check in checks.iter().filter(|c| c.rate.is_on()) {
            any = true;
            invocation
                .key(self.redis.key(&format!("limit:{}", check.key)))
                .arg(check.rate.interval_us())
                .arg(check.rate.period_us());
        }
        if !any {
            return Ok(Decision::Allowed);
        }
        // Lua numbers come back as integer replies (the wait, in µs; 0 when allowed).
        let wait_us: u64 = invocation.invoke_async(&mut self.redis.conn()).await?;
        Ok(if wait_us == 0 {
            Decision::Allowed
        } else {
            Decision::Refused {
                retry_after: Duration::from_micros(wait_us),
            }
        })
    }
}
