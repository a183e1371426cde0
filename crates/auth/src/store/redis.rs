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
//! The scripts are the `.lua` files in `redis/` (compiled in; each file's header says what it
//! does, its KEYS and ARGV and its answer). They answer outcomes by name (`REVOKED`,
//! `NOT_LIVE`, …): the codes are defined once, here, and each script runs after a
//! `local NAME = code` preamble built from them.
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

/// Lua shared by every script: the function `ensure_epoch`, which makes sure the epoch exists
/// and returns it (its value is the caller's clock, not Redis `TIME`; see the file's header).
const ENSURE_EPOCH: &str = include_str!("redis/ensure_epoch.lua");

/// Stores a session: [`STORED`].
const PUT: &str = include_str!("redis/put.lua");

/// Revokes a live session and logs it: [`REVOKED`] or [`NOT_LIVE`].
const REVOKE: &str = include_str!("redis/revoke.lua");

/// A page of the revocation log: `{epoch, last, {jti, ...}}`.
const REVOCATIONS: &str = include_str!("redis/revocations.lua");

/// `put.lua`'s answer: the session is stored (the store does not read it).
const STORED: i64 = 1;

/// `revoke.lua`'s answer when the session was not live (unknown, expired or revoked already).
const NOT_LIVE: i64 = 0;

/// `revoke.lua`'s answer when it revoked a live session.
const REVOKED: i64 = 1;

/// The codes `put.lua` answers with, by their Lua name.
const PUT_CODES: &[(&str, i64)] = &[("STORED", STORED)];

/// The codes `revoke.lua` answers with, by their Lua name.
const REVOKE_CODES: &[(&str, i64)] = &[("NOT_LIVE", NOT_LIVE), ("REVOKED", REVOKED)];

/// A script's full text: a `local NAME = code` line per entry of `codes` (so the Lua answers
/// by name), [`ENSURE_EPOCH`], then `body`. A pure function of this build, so the script's
/// SHA1 is too.
fn script_text(codes: &[(&str, i64)], body: &str) -> String {
    let mut text: String = codes
        .iter()
        .map(|(name, code)| format!("local {name} = {code}\n"))
        .collect();
    text.push_str(ENSURE_EPOCH);
    text.push_str(body);
    text
}

/// `revoke.lua`'s answer: whether it revoked a live session; an unknown code is an error.
fn revoked(code: i64) -> Result<bool, StoreError> {
    match code {
        REVOKED => Ok(true),
        NOT_LIVE => Ok(false),
        other => Err(StoreError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::UnexpectedReturnType,
            "the revoke script answered an unknown outcome code",
            other.to_string(),
        )))),
    }
}

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
        Self {
            keys: Arc::new(Keys {
                epoch: redis.key("epoch"),
                seq: redis.key("revocations:seq"),
                log: redis.key("revocations:log"),
                log_exp: redis.key("revocations:exp"),
            }),
            scripts: Arc::new(Scripts {
                put: Script::new(&script_text(PUT_CODES, PUT)),
                revoke: Script::new(&script_text(REVOKE_CODES, REVOKE)),
                revocations: Script::new(&script_text(&[], REVOCATIONS)),
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
        let code: i64 = self
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
        revoked(code)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lua after a script file's comment header.
    fn lua_code(lua: &str) -> String {
        lua.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_code_is_named_in_the_preamble_of_the_script_answering_it() {
        for (codes, body) in [(PUT_CODES, PUT), (REVOKE_CODES, REVOKE)] {
            let text = script_text(codes, body);
            for (name, code) in codes {
                assert!(
                    text.lines().any(|l| l == format!("local {name} = {code}")),
                    "{name} missing from the preamble"
                );
                assert!(
                    lua_code(body).contains(&format!("return {name}")),
                    "the script never answers {name}"
                );
            }
            assert!(text.ends_with(body));
        }
        for body in [ENSURE_EPOCH, PUT, REVOKE, REVOCATIONS] {
            for answer in lua_code(body).split("return ").skip(1) {
                assert!(
                    !answer.starts_with(|c: char| c.is_ascii_digit() || c == '-'),
                    "a bare number answered: return {answer:.20}"
                );
            }
        }
        for body in [PUT, REVOKE, REVOCATIONS] {
            for part in ["-- KEYS: ", "-- ARGV: ", "-- Returns "] {
                assert!(body.contains(part), "a script header lacks {part:?}");
            }
        }
    }

    #[test]
    fn revoke_codes_decode_and_an_unknown_one_is_an_error() {
        assert!(matches!(revoked(REVOKED), Ok(true)));
        assert!(matches!(revoked(NOT_LIVE), Ok(false)));
        assert!(matches!(revoked(2), Err(StoreError::Redis(_))));
        assert!(matches!(revoked(-1), Err(StoreError::Redis(_))));
    }
}
