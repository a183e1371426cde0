-- load_chunk: writes a chunk of stored reservations into a sale being built, if the load
-- still holds its claim (renewing the lease). Each hold is written confirmed, of this
-- generation; it takes stock (and joins the sale's `holds` set) unless it is released, or its
-- hold key says released already (a release that came while the sale was lost or being built:
-- a release is final).
--
-- KEYS: 1 sale, 2 held, 3 loading, 4 unconfirmed, 5 the sale's holds, 6.. holds.
-- ARGV: 1 generation, 2 lease (ms), 3 sale id, then per hold (in the order of KEYS 6..):
-- order (32 hex digits), user, quantity, released (`0`/`1`).
-- Returns a LoadStepCode: STEP_DONE when written, CLAIM_LOST when the claim was lost (nothing
-- written).
if redis.call('GET', KEYS[3]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  return CLAIM_LOST
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
return STEP_DONE
