-- reserve: decides a buy, atomically. Checks, in order: the sale is ready; the order id's
-- existing hold (the same reservation: ALREADY_RESERVED, its grace period restarted; another
-- one: CONFLICT; released before a rebuild wrote it: ALREADY_RESERVED, spent); the sale's
-- window; the stock; the per-user limit. Only then takes the stock and writes the hold
-- (unconfirmed, indexed in `unconfirmed` and in the sale's `holds` set). A hold of an earlier
-- build of this sale counts as absent.
-- Publishes `sold_out:<id>` on the events channel when it takes the last unit, and again
-- whenever it refuses a buy because nothing is left.
--
-- KEYS: 1 sale, 2 held, 3 hold, 4 unconfirmed, 5 events channel, 6 the sale's holds.
-- ARGV: 1 sale id, 2 user, 3 quantity, 4 now (Unix ms), 5 order (32 hex digits).
-- Returns {code, remaining}: code is one of ReserveCode (NOT_FOUND, RESERVED,
-- ALREADY_RESERVED, SOLD_OUT, LIMIT_REACHED, NOT_STARTED, ENDED, CONFLICT), remaining the
-- stock left after the decision (0 for NOT_FOUND).
local s = redis.call('HMGET', KEYS[1], 'ready', 'remaining', 'limit', 'starts', 'ends', 'gen')
if s[1] ~= '1' then
  return {NOT_FOUND, 0}
end
local remaining = tonumber(s[2])
local h = redis.call('HMGET', KEYS[3], 'sale', 'user', 'qty', 'gen', 'released')
if not h[1] and h[5] == '1' then
  -- Released before a rebuild wrote its hold: a spent order id, like any released one.
  return {ALREADY_RESERVED, remaining}
end
local stale = h[1] == ARGV[1] and h[4] ~= s[6]
if h[1] and not stale then
  if h[1] == ARGV[1] and h[2] == ARGV[2] and h[3] == ARGV[3] then
    redis.call('HSET', KEYS[3], 'touched', ARGV[4])
    redis.call('ZADD', KEYS[4], 'XX', ARGV[4], ARGV[5])
    return {ALREADY_RESERVED, remaining}
  end
  return {CONFLICT, remaining}
end
local now = tonumber(ARGV[4])
if now < tonumber(s[4]) then
  return {NOT_STARTED, remaining}
end
if now >= tonumber(s[5]) then
  return {ENDED, remaining}
end
local qty = tonumber(ARGV[3])
if remaining < qty then
  if remaining == 0 then
    -- Said again on every refused buy: gateways that forgot (their flag expired, they just
    -- subscribed) learn it from the next buy anyone makes.
    redis.call('PUBLISH', KEYS[5], 'sold_out:' .. ARGV[1])
  end
  return {SOLD_OUT, remaining}
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if held + qty > tonumber(s[3]) then
  return {LIMIT_REACHED, remaining}
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
return {RESERVED, remaining}
