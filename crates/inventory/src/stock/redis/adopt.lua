-- adopt: makes an order a live, confirmed hold of the sale (taking its stock, publishing
-- `sold_out:<id>` when that takes the last units) unless it holds stock already. A hold of an
-- earlier build, or a released one, is replaced.
--
-- KEYS: 1 sale, 2 held, 3 hold, 4 unconfirmed, 5 events channel, 6 the sale's holds.
-- ARGV: 1 sale id, 2 user, 3 quantity, 4 order (32 hex digits).
-- Returns an AdoptCode: ADOPTED, ALREADY_HELD (held exactly so), CONFLICT (held otherwise:
-- nothing changed), NOT_TRACKED (the sale is not ready: nothing changed).
local s = redis.call('HMGET', KEYS[1], 'ready', 'gen')
if s[1] ~= '1' then
  return NOT_TRACKED
end
local h = redis.call('HMGET', KEYS[3], 'sale', 'user', 'qty', 'released', 'gen')
if h[1] and h[4] == '0' and not (h[1] == ARGV[1] and h[5] ~= s[2]) then
  if h[1] == ARGV[1] and h[2] == ARGV[2] and h[3] == ARGV[3] then
    return ALREADY_HELD
  end
  return CONFLICT
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
return ADOPTED
