-- confirm: marks holds confirmed (those that still exist) and drops their orders from
-- `unconfirmed`.
--
-- KEYS: 1 unconfirmed, 2.. holds.
-- ARGV: the holds' orders (32 hex digits), in the order of KEYS 2...
-- Returns a ConfirmCode: CONFIRMED.
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'confirmed', '1')
  end
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
end
return CONFIRMED
