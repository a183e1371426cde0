//! [`RedisStock`]: the stock in Redis, shared by every inventory instance, so several instances
//! sell one stock and never more than it.
//!
//! Key layout, under the deployment's key prefix ([`flashsale_redis::Redis::key`]); order ids
//! are written as 32 lowercase hex digits (`{order}`):
//!
//! | key                       | type   | holds                                                     |
//! |---------------------------|--------|-----------------------------------------------------------|
//! | `stock:sale:{id}`         | hash   | `remaining`, `limit`, `starts`, `ends` (Unix ms), `gen`, `ready` (`1` once built), `layout` (`2`: has the `holds` set) |
//! | `stock:sale:{id}:held`    | hash   | user id → units the user holds in the sale                |
//! | `stock:sale:{id}:holds`   | set    | `{order}` of the sale's live holds (for [`StockStore::audit`]) |
//! | `stock:sale:{id}:loading` | string | `gen` of the load building the sale; expires (lease)      |
//! | `stock:hold:{order}`      | hash   | `sale`, `user`, `qty`, `released`, `confirmed` (`0`/`1`), `touched` (Unix ms), `gen` |
//! | `stock:unconfirmed`       | zset   | `{order}` of unconfirmed, unreleased holds, scored by `touched` |
//! | `stock:generation`        | string | last build generation handed out (INCR)                   |
//! | `stock:events`            | channel | `sold_out:{id}` when a reserve takes the last unit, `restocked:{id}` when a release or void gives the first one back (`flashsale_redis::events`) |
//!
//! Every decision is one Lua script ([`redis::Script`]: EVALSHA, falling back to EVAL after a
//! Redis restart forgot the script), so it is atomic however many instances call at once: a
//! reserve checks and decrements in one step and decides before it decrements, so `remaining`
//! never goes below zero. `remaining` and `unconfirmed` are one command each. Release and void
//! find the sale through the hold, so those two scripts build the sale's key from the prefix:
//! the layout assumes one Redis server (not Redis Cluster).
//!
//! **Loading.** A sale is built at most once while Redis keeps it: the first load claims it
//! (writes the sale hash without `ready`, and a `loading` lease), writes the stored reservations
//! in chunks of [`LOAD_CHUNK`], each renewing the lease, and sets `ready` last. Reserves see the
//! sale only once `ready` is set (before, `NotFound`); a load finding the sale ready does
//! nothing; one finding another build in progress waits for it, and takes the sale over (starts
//! afresh) if the lease ran out because that instance died.
//!
//! **Generations.** Each build gets a new `gen`, and holds carry the `gen` of the build they
//! belong to. A hold left from an earlier build (Redis lost the sale but kept the hold, e.g.
//! after an eviction) is not part of the rebuilt counters: it never gives stock back to them, and
//! a reserve of its order id treats it as absent. A *release* is the exception: a release
//! that finds no hold of the current build (the sale was lost, or is being rebuilt) marks the
//! hold key released, and the rebuild writes that order as released — the order is cancelled
//! or expired in the database, which the rebuild's earlier read may not show yet.
//!
//! **Auditing.** Every script that takes or gives back stock also adds the order to or removes
//! it from the sale's `holds` set, so the audit script can add up the live holds and compare
//! them with `remaining` and `held` in one atomic step. A sale built before the set existed
//! (no `layout`) is refused by the audit rather than "repaired" to full stock.
//!
//! Lua numbers are doubles: stock counts and Unix-ms times are exact (below 2^53); counters are
//! changed with HINCRBY and computed numbers written with `%.0f`, never in exponent form.

use std::{sync::Arc, time::Duration};

use ::redis::{aio::ConnectionManager, Script};
use async_trait::async_trait;
use flashsale_redis::Redis;

use super::{
    AdoptOutcome, HeldFix, LiveHold, OrderKey, ReserveDecision, ReserveOutcome, ReserveRequest,
    SaleAudit, StockError, StockStore,
};
use crate::{catalog::StoredReservation, sale::Sale};

/// Stored reservations written per load round trip.
const LOAD_CHUNK: usize = 1_000;

/// How long a load's claim lasts without progress before another instance may take it over.
const LOAD_LEASE: Duration = Duration::from_secs(30);

/// How often a load waiting for another instance's build looks again.
const LOAD_POLL: Duration = Duration::from_millis(20);

/// Orders confirmed per script (several scripts go in one pipeline).
const CONFIRM_CHUNK: usize = 500;

/// Lua shared by the scripts that give stock back.
const GIVE_BACK: &str = r"
local function give_back(sale, user, qty, events, sale_id, order)
  redis.call('SREM', sale .. ':holds', order)
  local now_left = redis.call('HINCRBY', sale, 'remaining', qty)
  if now_left > 0 and now_left <= tonumber(qty) then
    redis.call('PUBLISH', events, 'restocked:' .. sale_id)
  end
  local held = sale .. ':held'
  local left = redis.call('HINCRBY', held, user, string.format('%.0f', -tonumber(qty)))
  if left <= 0 then
    redis.call('HDEL', held, user)
  end
end
";

/// Decides a buy: `{outcome code, remaining}` (codes: [`OUTCOMES`]).
/// Publishes `sold_out:<id>` on the events channel when it takes the last unit, and again
/// whenever it refuses a buy because nothing is left.
/// KEYS: 1 sale, 2 held, 3 hold, 4 unconfirmed, 5 events channel, 6 the sale's holds. ARGV:
/// 1 sale id, 2 user, 3 quantity, 4 now, 5 order.
const RESERVE: &str = r"
local s = redis.call('HMGET', KEYS[1], 'ready', 'remaining', 'limit', 'starts', 'ends', 'gen')
if s[1] ~= '1' then
  return {0, 0}
end
local remaining = tonumber(s[2])
local h = redis.call('HMGET', KEYS[3], 'sale', 'user', 'qty', 'gen', 'released')
if not h[1] and h[5] == '1' then
  -- Released before a rebuild wrote its hold: a spent order id, like any released one.
  return {2, remaining}
end
local stale = h[1] == ARGV[1] and h[4] ~= s[6]
if h[1] and not stale then
  if h[1] == ARGV[1] and h[2] == ARGV[2] and h[3] == ARGV[3] then
    redis.call('HSET', KEYS[3], 'touched', ARGV[4])
    redis.call('ZADD', KEYS[4], 'XX', ARGV[4], ARGV[5])
    return {2, remaining}
  end
  return {7, remaining}
end
local now = tonumber(ARGV[4])
if now < tonumber(s[4]) then
  return {5, remaining}
end
if now >= tonumber(s[5]) then
  return {6, remaining}
end
local qty = tonumber(ARGV[3])
if remaining < qty then
  if remaining == 0 then
    -- Said again on every refused buy: gateways that forgot (their flag expired, they just
    -- subscribed) learn it from the next buy anyone makes.
    redis.call('PUBLISH', KEYS[5], 'sold_out:' .. ARGV[1])
  end
  return {3, remaining}
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held + qty > tonumber(s[3]) then
  return {4, remaining}
end
remaining = redis.call('HINCRBY', KEYS[1], 'remaining', string.format('%.0f', -qty))
if remaining == 0 then
  redis.call('PUBLISH', KEYS[5], 'sold_out:' .. ARGV[1])
end
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], 'sale', ARGV[1], 'user', ARGV[2], 'qty', ARGV[3], 'released', '0',
  'confirmed', '0', 'touched', ARGV[4], 'gen', s[6])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[5])
return {1, remaining}
";

/// Outcome of each [`RESERVE`] code.
const OUTCOMES: [ReserveOutcome; 8] = [
    ReserveOutcome::NotFound,
    ReserveOutcome::Reserved,
    ReserveOutcome::AlreadyReserved,
    ReserveOutcome::SoldOut,
    ReserveOutcome::LimitReached,
    ReserveOutcome::NotStarted,
    ReserveOutcome::Ended,
    ReserveOutcome::Conflict,
];

/// The reserve script's answer (`{code, remaining}`) as a decision.
fn decision((code, remaining): (usize, i64)) -> Result<ReserveDecision, StockError> {
    let outcome = OUTCOMES
        .get(code)
        .copied()
        .ok_or_else(|| StockError(format!("reserve script answered code {code}").into()))?;
    Ok(ReserveDecision { outcome, remaining })
}

/// Gives a held reservation back; 1 the first time, else 0. A hold of the build in progress
/// (not ready yet) gives back too. With nothing to give back to — no hold, or one of an earlier
/// build (the sale was lost) — the release is remembered (`released` = `1` on the hold key, a
/// bare marker if there was none), and a rebuild writes that order as released.
/// KEYS: 1 hold, 2 unconfirmed, 3 events channel. ARGV: 1 prefix of sale keys, 2 order.
const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'sale', 'user', 'qty', 'released', 'gen')
if h[4] == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'released', '1')
redis.call('ZREM', KEYS[2], ARGV[2])
if not h[1] then
  return 0
end
local sale = ARGV[1] .. h[1]
if redis.call('HGET', sale, 'gen') ~= h[5] then
  return 0
end
give_back(sale, h[2], h[3], KEYS[3], h[1], ARGV[2])
return 1
";

/// Drops an unconfirmed (with ARGV 4 = `1`: also a confirmed), unreleased hold not touched
/// after the cutoff; 1 when dropped.
/// KEYS: 1 hold, 2 unconfirmed, 3 events channel. ARGV: 1 prefix of sale keys, 2 order,
/// 3 cutoff, 4 also confirmed (`0`/`1`).
const VOID: &str = r"
local h = redis.call('HMGET', KEYS[1], 'sale', 'user', 'qty', 'released', 'confirmed',
  'touched', 'gen')
if not h[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 0
end
if h[4] == '1' or (h[5] == '1' and ARGV[4] ~= '1') or tonumber(h[6]) > tonumber(ARGV[3]) then
  return 0
end
local sale = ARGV[1] .. h[1]
local s = redis.call('HMGET', sale, 'ready', 'gen')
if s[1] == '1' and s[2] == h[7] then
  give_back(sale, h[2], h[3], KEYS[3], h[1], ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
";

/// Marks holds confirmed. KEYS: 1 unconfirmed, 2.. holds. ARGV: the holds' orders.
const CONFIRM: &str = r"
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'confirmed', '1')
  end
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
end
return 0
";

/// Claims a sale for building: 0 when it is built already, -1 while another load holds the
/// claim, -2 when a built sale of this id has another limit or window (another database's
/// sale), else the new generation (the sale is then reset, not yet ready).
/// KEYS: 1 sale, 2 held, 3 loading, 4 generation, 5 the sale's holds. ARGV: 1 stock, 2 limit,
/// 3 starts, 4 ends, 5 lease (ms).
const LOAD_BEGIN: &str = r"
local built = redis.call('HMGET', KEYS[1], 'ready', 'limit', 'starts', 'ends')
if built[1] == '1' then
  if built[2] ~= ARGV[2] or built[3] ~= ARGV[3] or built[4] ~= ARGV[4] then
    return -2
  end
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local gen = string.format('%.0f', redis.call('INCR', KEYS[4]))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('HSET', KEYS[1], 'remaining', ARGV[1], 'limit', ARGV[2], 'starts', ARGV[3],
  'ends', ARGV[4], 'gen', gen, 'layout', '2')
redis.call('SET', KEYS[3], gen, 'PX', ARGV[5])
return tonumber(gen)
";

/// Writes a chunk of stored reservations, each as released if its hold key says so already;
/// 0 when the claim was lost, else 1.
/// KEYS: 1 sale, 2 held, 3 loading, 4 unconfirmed, 5 the sale's holds, 6.. holds. ARGV:
/// 1 generation, 2 lease (ms), 3 sale id, then per hold: order, user, quantity, released
/// (`0`/`1`).
const LOAD_CHUNK_SCRIPT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
for i = 6, #KEYS do
  local a = 4 + (i - 6) * 4
  local user, qty, released = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  -- Released (by a release that came while the sale was lost or being built) stays released:
  -- a release is final.
  if redis.call('HGET', KEYS[i], 'released') == '1' then
    released = '1'
  end
  if released == '0' then
    redis.call('HINCRBY', KEYS[1], 'remaining', string.format('%.0f', -tonumber(qty)))
    redis.call('HINCRBY', KEYS[2], user, qty)
    redis.call('SADD', KEYS[5], ARGV[a])
  end
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], 'sale', ARGV[3], 'user', user, 'qty', qty, 'released', released,
    'confirmed', '1', 'touched', '0', 'gen', ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[a])
end
return 1
";

/// Makes a built sale visible: `{1, remaining}`, or `{0, 0}` when the claim was lost. With
/// stock left it publishes `restocked:<id>` (gateways may still hold a sold-out pushed before
/// the sale was lost). KEYS: 1 sale, 2 loading, 3 events channel. ARGV: 1 generation, 2 sale id.
const LOAD_FINISH: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  return {0, 0}
end
redis.call('HSET', KEYS[1], 'ready', '1')
redis.call('DEL', KEYS[2])
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining'))
if remaining > 0 then
  redis.call('PUBLISH', KEYS[3], 'restocked:' .. ARGV[2])
end
return {1, remaining}
";

/// Checks a sale's counters against its live holds (those in its `holds` set whose hold is of
/// this sale and build and unreleased) and, with ARGV 4 = `1`, sets them to match, drops set
/// members that are not live holds, and publishes `restocked` / `sold_out` when `remaining`
/// crosses zero. Answers `{0, 0, 0, {}, {}}` when the sale is not ready, `{-1, …}` when it was
/// built without the `holds` set, else `{1, remaining before, remaining after, {user, before,
/// after, …}, {order, user, qty, touched, …}}`.
/// KEYS: 1 sale, 2 held, 3 the sale's holds, 4 events channel. ARGV: 1 prefix of hold keys,
/// 2 sale id, 3 stock, 4 repair (`0`/`1`).
const AUDIT: &str = r"
local s = redis.call('HMGET', KEYS[1], 'ready', 'remaining', 'gen', 'layout')
if s[1] ~= '1' then
  return {0, 0, 0, {}, {}}
end
if s[4] ~= '2' then
  return {-1, 0, 0, {}, {}}
end
local repair = ARGV[4] == '1'
local total = 0
local per_user = {}
local holds = {}
for _, order in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local h = redis.call('HMGET', ARGV[1] .. order, 'sale', 'user', 'qty', 'released', 'gen',
    'touched')
  if h[1] == ARGV[2] and h[4] == '0' and h[5] == s[3] then
    local qty = tonumber(h[3])
    total = total + qty
    per_user[h[2]] = (per_user[h[2]] or 0) + qty
    holds[#holds + 1] = order
    holds[#holds + 1] = h[2]
    holds[#holds + 1] = h[3]
    holds[#holds + 1] = h[6]
  elseif repair then
    redis.call('SREM', KEYS[3], order)
  end
end
local users = {}
local function fix(user, before, want)
  users[#users + 1] = user
  users[#users + 1] = string.format('%.0f', before)
  users[#users + 1] = string.format('%.0f', want)
  if repair then
    if want == 0 then
      redis.call('HDEL', KEYS[2], user)
    else
      redis.call('HSET', KEYS[2], user, string.format('%.0f', want))
    end
  end
end
local held = redis.call('HGETALL', KEYS[2])
local counted = {}
for i = 1, #held, 2 do
  local user, units = held[i], tonumber(held[i + 1])
  counted[user] = true
  local want = per_user[user] or 0
  if units ~= want then
    fix(user, units, want)
  end
end
for user, want in pairs(per_user) do
  if not counted[user] then
    fix(user, 0, want)
  end
end
local before = tonumber(s[2])
local after = tonumber(ARGV[3]) - total
if repair and after ~= before then
  redis.call('HSET', KEYS[1], 'remaining', string.format('%.0f', after))
  if before <= 0 and after > 0 then
    redis.call('PUBLISH', KEYS[4], 'restocked:' .. ARGV[2])
  elseif before > 0 and after <= 0 then
    redis.call('PUBLISH', KEYS[4], 'sold_out:' .. ARGV[2])
  end
end
return {1, s[2], string.format('%.0f', after), users, holds}
";

/// Makes an order a live, confirmed hold of the sale (taking its stock) unless it holds stock
/// already: 1 adopted, 2 already held exactly so, 3 held otherwise (conflict), 0 sale not ready.
/// A hold of an earlier build, or a released one, is replaced.
/// KEYS: 1 sale, 2 held, 3 hold, 4 unconfirmed, 5 events channel, 6 the sale's holds. ARGV:
/// 1 sale id, 2 user, 3 quantity, 4 order.
const ADOPT: &str = r"
local s = redis.call('HMGET', KEYS[1], 'ready', 'gen')
if s[1] ~= '1' then
  return 0
end
local h = redis.call('HMGET', KEYS[3], 'sale', 'user', 'qty', 'released', 'gen')
if h[1] and h[4] == '0' and not (h[1] == ARGV[1] and h[5] ~= s[2]) then
  if h[1] == ARGV[1] and h[2] == ARGV[2] and h[3] == ARGV[3] then
    return 2
  end
  return 3
end
local left = redis.call('HINCRBY', KEYS[1], 'remaining', string.format('%.0f', -tonumber(ARGV[3])))
if left <= 0 and left + tonumber(ARGV[3]) > 0 then
  redis.call('PUBLISH', KEYS[5], 'sold_out:' .. ARGV[1])
end
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'sale', ARGV[1], 'user', ARGV[2], 'qty', ARGV[3], 'released', '0',
  'confirmed', '1', 'touched', '0', 'gen', s[2])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
";

/// The compiled scripts (their SHA1s are computed once, here).
#[derive(Debug)]
struct Scripts {
    reserve: Script,
    release: Script,
    void: Script,
    confirm: Script,
    load_begin: Script,
    load_chunk: Script,
    load_finish: Script,
    audit: Script,
    adopt: Script,
}

/// Full keys (and key prefixes) that do not depend on a sale or an order.
#[derive(Debug)]
struct Keys {
    unconfirmed: String,
    /// Channel of [`flashsale_redis::events::StockEvent`]s.
    events: String,
    generation: String,
    /// `stock:sale:` under the prefix; a sale's key is this plus its id.
    sale_prefix: String,
    /// `stock:hold:` under the prefix; a hold's key is this plus its `{order}`.
    hold_prefix: String,
}

/// Stock in Redis (see the module docs for the key layout), exact under any concurrency across
/// any number of instances sharing the server and prefix.
///
/// Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStock {
    redis: Redis,
    scripts: Arc<Scripts>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for RedisStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStock")
            .field("prefix", &self.redis.prefix())
            .finish_non_exhaustive()
    }
}

/// An order id as written in Redis: 32 lowercase hex digits.
fn order_hex(order: OrderKey) -> String {
    format!("{order:032x}")
}

/// A lost load claim (another instance took a stalled build over).
fn claim_lost(sale_id: i64) -> StockError {
    StockError(format!("load of sale {sale_id} lost its claim to another instance").into())
}

impl RedisStock {
    /// Stock over `redis`, its keys under the handle's prefix. Inventory instances given the
    /// same server and prefix share one stock.
    pub fn new(redis: Redis) -> Self {
        let with_give_back = |body: &str| Script::new(&format!("{GIVE_BACK}{body}"));
        Self {
            keys: Arc::new(Keys {
                unconfirmed: redis.key("stock:unconfirmed"),
                events: redis.key(flashsale_redis::events::STOCK_EVENTS),
                generation: redis.key("stock:generation"),
                sale_prefix: redis.key("stock:sale:"),
                hold_prefix: redis.key("stock:hold:"),
            }),
            scripts: Arc::new(Scripts {
                reserve: Script::new(RESERVE),
                release: with_give_back(RELEASE),
                void: with_give_back(VOID),
                confirm: Script::new(CONFIRM),
                load_begin: Script::new(LOAD_BEGIN),
                load_chunk: Script::new(LOAD_CHUNK_SCRIPT),
                load_finish: Script::new(LOAD_FINISH),
                audit: Script::new(AUDIT),
                adopt: Script::new(ADOPT),
            }),
            redis,
        }
    }

    fn sale_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}", self.keys.sale_prefix)
    }

    fn held_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:held", self.keys.sale_prefix)
    }

    fn loading_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:loading", self.keys.sale_prefix)
    }

    fn holds_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:holds", self.keys.sale_prefix)
    }

    fn hold_key(&self, order: OrderKey) -> String {
        format!("{}{}", self.keys.hold_prefix, order_hex(order))
    }

    async fn void_with(
        &self,
        order: OrderKey,
        before_ms: i64,
        even_confirmed: bool,
    ) -> Result<bool, StockError> {
        let voided: i64 = self
            .scripts
            .void
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .arg(&self.keys.sale_prefix)
            .arg(order_hex(order))
            .arg(before_ms)
            .arg(u8::from(even_confirmed))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(voided == 1)
    }

    /// The reserve script's call for one request (keys and arguments as `RESERVE` reads them).
    fn reserve_invocation(&self, req: &ReserveRequest) -> ::redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.reserve.prepare_invoke();
        invocation
            .key(self.sale_key(req.sale_id))
            .key(self.held_key(req.sale_id))
            .key(self.hold_key(req.order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .key(self.holds_key(req.sale_id))
            .arg(req.sale_id)
            .arg(req.user_id)
            .arg(req.quantity)
            .arg(req.now_ms)
            .arg(order_hex(req.order));
        invocation
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.conn()
    }

    /// Claims the sale: `Some(generation)` to build it, `None` when it is built already; waits
    /// while another instance builds it.
    async fn claim(&self, sale: &Sale) -> Result<Option<i64>, StockError> {
        let lease_ms = u64::try_from(LOAD_LEASE.as_millis()).unwrap_or(u64::MAX);
        loop {
            let gen: i64 = self
                .scripts
                .load_begin
                .key(self.sale_key(sale.id))
                .key(self.held_key(sale.id))
                .key(self.loading_key(sale.id))
                .key(&self.keys.generation)
                .key(self.holds_key(sale.id))
                .arg(sale.stock)
                .arg(sale.per_user_limit)
                .arg(sale.starts_at_ms)
                .arg(sale.ends_at_ms)
                .arg(lease_ms)
                .invoke_async(&mut self.conn())
                .await?;
            match gen {
                0 => return Ok(None),
                -1 => tokio::time::sleep(LOAD_POLL).await,
                // Another database's sale under the same id and prefix (a new deployment
                // pointed at an old Redis): never sell its stock as ours.
                -2 => {
                    return Err(StockError(
                        format!(
                            "Redis holds a different sale {} under this key prefix; \
                             use another redis.key_prefix or delete the old keys",
                            sale.id
                        )
                        .into(),
                    ))
                }
                gen => return Ok(Some(gen)),
            }
        }
    }
}

#[async_trait]
impl StockStore for RedisStock {
    async fn load(
        &self,
        sale: &Sale,
        reservations: &[StoredReservation],
    ) -> Result<bool, StockError> {
        let Some(gen) = self.claim(sale).await? else {
            return Ok(false);
        };
        let lease_ms = u64::try_from(LOAD_LEASE.as_millis()).unwrap_or(u64::MAX);
        let mut holds = Vec::new();
        for r in reservations.iter().filter(|r| r.sale_id == sale.id) {
            let Ok(order) = uuid::Uuid::parse_str(&r.order_id) else {
                tracing::warn!(order_id = %r.order_id, "stored order id is not a uuid; skipped");
                continue;
            };
            holds.push((order.as_u128(), r));
        }
        for chunk in holds.chunks(LOAD_CHUNK) {
            let mut call = self.scripts.load_chunk.prepare_invoke();
            call.key(self.sale_key(sale.id))
                .key(self.held_key(sale.id))
                .key(self.loading_key(sale.id))
                .key(&self.keys.unconfirmed)
                .key(self.holds_key(sale.id))
                .arg(gen)
                .arg(lease_ms)
                .arg(sale.id);
            for (order, r) in chunk {
                call.key(self.hold_key(*order))
                    .arg(order_hex(*order))
                    .arg(r.user_id)
                    .arg(r.quantity)
                    .arg(u8::from(r.released));
            }
            let written: i64 = call.invoke_async(&mut self.conn()).await?;
            if written != 1 {
                return Err(claim_lost(sale.id));
            }
        }
        let (built, remaining): (i64, i64) = self
            .scripts
            .load_finish
            .key(self.sale_key(sale.id))
            .key(self.loading_key(sale.id))
            .key(&self.keys.events)
            .arg(gen)
            .arg(sale.id)
            .invoke_async(&mut self.conn())
            .await?;
        if built != 1 {
            return Err(claim_lost(sale.id));
        }
        if remaining < 0 {
            tracing::error!(
                sale_id = sale.id,
                remaining,
                "stored orders exceed the stock"
            );
        }
        Ok(true)
    }

    async fn reserve(&self, req: ReserveRequest) -> Result<ReserveDecision, StockError> {
        let answer: (usize, i64) = self
            .reserve_invocation(&req)
            .invoke_async(&mut self.conn())
            .await?;
        decision(answer)
    }

    async fn reserve_many(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveDecision>, StockError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let invocations: Vec<_> = requests
            .iter()
            .map(|r| self.reserve_invocation(r))
            .collect();
        let pipeline = || {
            let mut pipe = ::redis::pipe();
            for invocation in &invocations {
                pipe.invoke_script(invocation);
            }
            pipe
        };
        // One round trip. A pipelined EVALSHA does not load a missing script (after a Redis
        // restart or SCRIPT FLUSH): then nothing ran, so load it and send them again.
        let answers: Vec<(usize, i64)> = match pipeline().query_async(&mut self.conn()).await {
            Ok(answers) => answers,
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                self.scripts.reserve.load_async(&mut self.conn()).await?;
                pipeline().query_async(&mut self.conn()).await?
            }
            Err(e) => return Err(e.into()),
        };
        answers.into_iter().map(decision).collect()
    }

    async fn release(&self, order: OrderKey) -> Result<bool, StockError> {
        let released: i64 = self
            .scripts
            .release
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .arg(&self.keys.sale_prefix)
            .arg(order_hex(order))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(released == 1)
    }

    async fn remaining(&self, sale_id: i64) -> Result<Option<i64>, StockError> {
        let (ready, remaining): (Option<String>, Option<i64>) = ::redis::cmd("HMGET")
            .arg(self.sale_key(sale_id))
            .arg(&["ready", "remaining"])
            .query_async(&mut self.conn())
            .await?;
        Ok(remaining.filter(|_| ready.as_deref() == Some("1")))
    }

    async fn unconfirmed(&self, before_ms: i64) -> Result<Vec<OrderKey>, StockError> {
        let members: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(&self.keys.unconfirmed)
            .arg("-inf")
            .arg(before_ms)
            .query_async(&mut self.conn())
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| match u128::from_str_radix(m, 16) {
                Ok(order) => Some(order),
                Err(_) => {
                    tracing::warn!(member = %m, "unconfirmed index holds a malformed order id");
                    None
                }
            })
            .collect())
    }

    async fn confirm(&self, orders: &[OrderKey]) -> Result<(), StockError> {
        if orders.is_empty() {
            return Ok(());
        }
        let calls: Vec<_> = orders
            .chunks(CONFIRM_CHUNK)
            .map(|chunk| {
                let mut call = self.scripts.confirm.prepare_invoke();
                call.key(&self.keys.unconfirmed);
                for order in chunk {
                    call.key(self.hold_key(*order)).arg(order_hex(*order));
                }
                call
            })
            .collect();
        // One round trip: the script is loaded first (pipelines do not retry a missing one).
        let mut pipe = ::redis::pipe();
        pipe.load_script(&self.scripts.confirm).ignore();
        for call in &calls {
            pipe.invoke_script(call).ignore();
        }
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn void(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        self.void_with(order, before_ms, false).await
    }

    async fn void_absent(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        self.void_with(order, before_ms, true).await
    }

    async fn audit(&self, sale: &Sale, repair: bool) -> Result<Option<SaleAudit>, StockError> {
        let (code, remaining_before, remaining_after, users, holds): (
            i64,
            i64,
            i64,
            Vec<i64>,
            Vec<String>,
        ) = self
            .scripts
            .audit
            .key(self.sale_key(sale.id))
            .key(self.held_key(sale.id))
            .key(self.holds_key(sale.id))
            .key(&self.keys.events)
            .arg(&self.keys.hold_prefix)
            .arg(sale.id)
            .arg(sale.stock)
            .arg(u8::from(repair))
            .invoke_async(&mut self.conn())
            .await?;
        match code {
            1 => {}
            -1 => {
                return Err(StockError(
                    format!(
                        "sale {} was built by an older version without its holds set; \
                         it cannot be audited until it is rebuilt",
                        sale.id
                    )
                    .into(),
                ))
            }
            _ => return Ok(None),
        }
        let users = users
            .chunks_exact(3)
            .map(|f| HeldFix {
                user_id: f[0],
                before: f[1],
                after: f[2],
            })
            .collect();
        let malformed =
            || StockError(format!("audit of sale {} returned a malformed hold", sale.id).into());
        let holds = holds
            .chunks_exact(4)
            .map(|h| {
                Ok(LiveHold {
                    order: u128::from_str_radix(&h[0], 16).map_err(|_| malformed())?,
                    user_id: h[1].parse().map_err(|_| malformed())?,
                    quantity: h[2].parse().map_err(|_| malformed())?,
                    touched_ms: h[3].parse().map_err(|_| malformed())?,
                })
            })
            .collect::<Result<_, StockError>>()?;
        Ok(Some(SaleAudit {
            remaining_before,
            remaining_after,
            users,
            holds,
        }))
    }

    async fn adopt(
        &self,
        sale_id: i64,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) -> Result<AdoptOutcome, StockError> {
        let code: i64 = self
            .scripts
            .adopt
            .key(self.sale_key(sale_id))
            .key(self.held_key(sale_id))
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .key(self.holds_key(sale_id))
            .arg(sale_id)
            .arg(user_id)
            .arg(quantity)
            .arg(order_hex(order))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match code {
            1 => AdoptOutcome::Adopted,
            2 => AdoptOutcome::AlreadyHeld,
            3 => AdoptOutcome::Conflict,
            _ => AdoptOutcome::NotTracked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_32_lowercase_hex_digits() {
        assert_eq!(order_hex(0), "0".repeat(32));
        assert_eq!(order_hex(u128::MAX), "f".repeat(32));
        let id = uuid::Uuid::new_v4().as_u128();
        assert_eq!(u128::from_str_radix(&order_hex(id), 16).ok(), Some(id));
        assert_eq!(order_hex(0xAB), format!("{}ab", "0".repeat(30)));
    }
}
