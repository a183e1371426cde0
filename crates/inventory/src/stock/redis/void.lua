-- void: drops an unconfirmed (with ARGV 4 = `1`: also a confirmed), unreleased hold not
-- touched after the cutoff (runs after give_back.lua). Its stock goes back only if the hold is
-- of the sale's current, ready build. A missing hold is just dropped from `unconfirmed`.
--
-- KEYS: 1 hold, 2 unconfirmed, 3 events channel.
-- ARGV: 1 prefix of sale keys, 2 order (32 hex digits), 3 cutoff (Unix ms), 4 also confirmed
-- (`0`/`1`).
-- Returns a VoidCode: VOIDED when the hold was dropped, else KEPT.
local h = redis.call('HMGET', KEYS[1], 'sale', 'user', 'qty', 'released', 'confirmed',
  'touched', 'gen')
if not h[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return KEPT
end
if h[4] == '1' or (h[5] == '1' and ARGV[4] ~= '1') or tonumber(h[6]) > tonumber(ARGV[3]) then
  return KEPT
end
local sale = ARGV[1] .. h[1]
local s = redis.call('HMGET', sale, 'ready', 'gen')
if s[1] == '1' and s[2] == h[7] then
  give_back(sale, h[2], h[3], KEYS[3], h[1], ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return VOIDED
