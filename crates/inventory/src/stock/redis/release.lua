-- release: gives a held reservation back (runs after give_back.lua). A hold of the build in
-- progress (not ready yet) gives back too. With nothing to give back to — no hold, or one of
-- an earlier build (the sale was lost) — the release is remembered (`released` = `1` on the
-- hold key, a bare marker if there was none), and a rebuild writes that order as released.
-- The order leaves `unconfirmed` either way.
--
-- KEYS: 1 hold, 2 unconfirmed, 3 events channel.
-- ARGV: 1 prefix of sale keys, 2 order (32 hex digits).
-- Returns a ReleaseCode: RELEASED the first time a held reservation is released, else
-- NOTHING_GIVEN_BACK.
local h = redis.call('HMGET', KEYS[1], 'sale', 'user', 'qty', 'released', 'gen')
if h[4] == '1' then
  return NOTHING_GIVEN_BACK
end
redis.call('HSET', KEYS[1], 'released', '1')
redis.call('ZREM', KEYS[2], ARGV[2])
if not h[1] then
  return NOTHING_GIVEN_BACK
end
local sale = ARGV[1] .. h[1]
if redis.call('HGET', sale, 'gen') ~= h[5] then
  return NOTHING_GIVEN_BACK
end
give_back(sale, h[2], h[3], KEYS[3], h[1], ARGV[2])
return RELEASED
