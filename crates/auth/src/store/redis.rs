//! [`RedisSessionStore`]: sessions and the revocation log in Redis, shared by every auth
//! instance, so a logout through any instance is seen by every gateway.
//!
//! Key layout, under the deployment's key prefix ([`flashsale_redis::Redis::key`]):
//!
//! | key               | type   | holds                                                         |
//! |-------------------|--------|---------------------------------------------------------------|
//! | `session:{jti}`   | hash   | `user`, `role`, `ip`, `ua`, `exp`; expires (PEXPIREAT) at `exp` |
//! | `revocations:seq` | string | position of the last revocation (INCR)                        |
//! | `revocations:log` | zset   | revoked `jti`s, scored by position                            |
//! | `revocations:exp` | zset   | the same `jti`s, scored by their session's expiry (Unix ms)   |
//! | `epoch`           | string | Unix ms when this data set began                              |
//!
//! Every operation is one round trip. Writes are Lua scripts ([`redis::Script`]: EVALSHA, with
//! a fallback to EVAL after a Redis restart forgot the script), so each is atomic: two auth
//! instances revoking the same session at once get exactly one `true`, and positions are
//! handed out without gaps or duplicates.
//!
//! The epoch is created (SET NX) by whichever script first finds it missing — after a FLUSHALL
//! or a restart of a Redis without persistence — which also restarts the log. Gateways see the
//! new epoch at their next poll and drop their caches: the sessions they hold are gone.

use std::sync::Arc;

use ::redis::{aio::ConnectionManager, Script};
use async_trait::async_trait;
use flashsale_redis::Redis;

use super::{Revocations, Role, Session, SessionStore, StoreError};

/// Most revocations returned by one [`SessionStore::revocations`] call by default.
pub const DEFAULT_PAGE_LIMIT: usize = 10_000;

/// Most stale revocations one `revoke` trims from the log (bounds the script's run time).
const TRIM_PER_REVOKE: usize = 1_000;

/// Lua shared by every script: makes sure the epoch exists and returns it.
///
/// KEYS: 1 epoch, 2 sequence, 3 log, 4 log by expiry. ARGV[1]: the caller's now (Unix ms).
///
/// The epoch's value is the caller's clock (ARGV), not Redis `TIME`: the scripts stay
/// deterministic (safe under verbatim script replication and AOF on every Redis version, no
/// `redis.replicate_commands()` needed), and the epoch, the session expiries and the "is this
/// revocation stale" cut-off all come from the same clock — the auth instances' — as in
/// [`super::MemorySessionStore`]. A missing epoch means a new data set, so any leftover log is
/// dropped with it: gateways restart from position 0 of a new epoch.
const ENSURE_EPOCH: &str = r"
local function ensure_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch, 'NX')
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  end
  return epoch
end
";

/// Stores a session. KEYS: 1-4 as [`ENSURE_EPOCH`], 5 the session.
/// ARGV: 1 now, 2 user, 3 role, 4 ip hash, 5 user-agent hash, 6 expiry (Unix ms).
const PUT: &str = r"
ensure_epoch()
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[5], 'user', ARGV[2], 'role', ARGV[3], 'ip', ARGV[4], 'ua', ARGV[5],
  'exp', ARGV[6])
redis.call('PEXPIREAT', KEYS[5], ARGV[6])
return 1
";

/// Revokes a live session and logs it; 1 when it was live, else 0.
/// KEYS: 1-4 as [`ENSURE_EPOCH`], 5 the session. ARGV: 1 now, 2 jti, 3 most stale entries
/// trimmed per call (bounds the script's run time; the rest goes with the next revocations).
const REVOKE: &str = r"
ensure_epoch()
local exp = redis.call('HGET', KEYS[5], 'exp')
if not exp or tonumber(exp) <= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[5])
local position = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], position, ARGV[2])
redis.call('ZADD', KEYS[4], exp, ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[3])
for _, jti in ipairs(stale) do
  redis.call('ZREM', KEYS[3], jti)
  redis.call('ZREM', KEYS[4], jti)
end
return 1
";

/// A page of the log: `{epoch, last, {jti, ...}}`.
/// KEYS: 1-4 as [`ENSURE_EPOCH`]. ARGV: 1 now, 2 after, 3 page limit.
const REVOCATIONS: &str = r"
local epoch = ensure_epoch()
local limit = tonumber(ARGV[3])
local page = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[2], '+inf', 'WITHSCORES',
  'LIMIT', 0, limit)
local jtis = {}
for i = 1, #page, 2 do
  jtis[#jtis + 1] = page[i]
end
local last
if #jtis >= limit then
  last = page[#page]
else
  last = redis.call('GET', KEYS[2]) or '0'
end
return {epoch, last, jtis}
";

/// The compiled scripts (their SHA1s are computed once, here).
#[derive(Debug)]
struct Scripts {
    put: Script,
    revoke: Script,
    revocations: Script,
}

/// Full keys of the shared (non-session) state.
#[derive(Debug)]
struct Keys {
    epoch: String,
    seq: String,
    log: String,
    log_exp: String,
}

/// Sessions and their revocation log in Redis (see the module docs for the key layout).
///
/// Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisSessionStore {
    redis: Redis,
    scripts: Arc<Scripts>,
    keys: Arc<Keys>,
    page_limit: usize,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.redis.prefix())
            .field("page_limit", &self.page_limit)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// A store over `redis`, its keys under the handle's prefix. Auth instances given the same
    /// server and prefix share sessions, revocations and epoch.
    pub fn new(redis: Redis) -> Self {
        let script = |body: &str| Script::new(&format!("{ENSURE_EPOCH}{body}"));
        Self {
            keys: Arc::new(Keys {
                epoch: redis.key("epoch"),
                seq: redis.key("revocations:seq"),
                log: redis.key("revocations:log"),
                log_exp: redis.key("revocations:exp"),
            }),
            scripts: Arc::new(Scripts {
                put: script(PUT),
                revoke: script(REVOKE),
                revocations: script(REVOCATIONS),
            }),
            redis,
            page_limit: DEFAULT_PAGE_LIMIT,
        }
    }

    /// Caps a page of [`SessionStore::revocations`] at `limit` entries (at least 1; default
    /// [`DEFAULT_PAGE_LIMIT`]). A capped page's `last` is the position of its last entry, so
    /// the next poll continues from there.
    #[must_use]
    pub fn with_page_limit(mut self, limit: usize) -> Self {
        self.page_limit = limit.max(1);
        self
    }

    fn session_key(&self, jti: &str) -> String {
        self.redis.key(&format!("session:{jti}"))
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.conn()
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn put(&self, session: Session) -> Result<(), StoreError> {
        let k = &self.keys;
        let () = self
            .scripts
            .put
            .key(&k.epoch)
            .key(&k.seq)
            .key(&k.log)
            .key(&k.log_exp)
            .key(self.session_key(&session.jti))
            .arg(flashsale_storage::now_ms())
            .arg(session.user_id)
            .arg(session.role.as_str())
            .arg(&session.ip_hash)
            .arg(&session.user_agent_hash)
            .arg(session.expires_at_ms)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn get(&self, jti: &str) -> Result<Option<Session>, StoreError> {
        type Fields = (
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let fields: Fields = ::redis::cmd("HMGET")
            .arg(self.session_key(jti))
            .arg(&["user", "role", "ip", "ua", "exp"])
            .query_async(&mut self.conn())
            .await?;
        let (Some(user_id), Some(role), Some(ip_hash), Some(user_agent_hash), Some(expires_at_ms)) =
            fields
        else {
            // Unknown, expired, or (never written by this store) incomplete: no session.
            return Ok(None);
        };
        // Redis expires the key on its own clock; liveness is judged on ours, as everywhere.
        if expires_at_ms <= flashsale_storage::now_ms() {
            return Ok(None);
        }
        Ok(Some(Session {
            jti: jti.to_owned(),
            user_id,
            role: Role::parse(&role),
            ip_hash,
            user_agent_hash,
            expires_at_ms,
        }))
    }

    async fn revoke(&self, jti: &str) -> Result<bool, StoreError> {
        let k = &self.keys;
        let revoked: i64 = self
            .scripts
            .revoke
            .key(&k.epoch)
            .key(&k.seq)
            .key(&k.log)
            .key(&k.log_exp)
            .key(self.session_key(jti))
            .arg(flashsale_storage::now_ms())
            .arg(jti)
            .arg(TRIM_PER_REVOKE)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(revoked == 1)
    }

    async fn revocations(&self, after: u64) -> Result<Revocations, StoreError> {
        let k = &self.keys;
        let (epoch_ms, last, jtis): (i64, u64, Vec<String>) = self
            .scripts
            .revocations
            .key(&k.epoch)
            .key(&k.seq)
            .key(&k.log)
            .key(&k.log_exp)
            .arg(flashsale_storage::now_ms())
            .arg(after)
            .arg(self.page_limit)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Revocations {
            jtis,
            last,
            epoch_ms,
        })
    }
}
