-- revoke: revokes a live session: deletes it and logs its jti at the next position (and by
-- its expiry), then trims up to ARGV 3 stale entries (sessions expired by now) from the log.
-- Runs after ensure_epoch.lua.
--
-- KEYS: 1 epoch, 2 sequence, 3 log, 4 log by expiry (as ensure_epoch), 5 the session.
-- ARGV: 1 now (Unix ms), 2 jti, 3 most stale entries trimmed per call (bounds the script's run
-- time; the rest goes with the next revocations).
-- Returns REVOKED when the session was live, else NOT_LIVE (unknown, expired or revoked
-- already: nothing changed).
ensure_epoch()
local exp = redis.call('HGET', KEYS[5], 'exp')
if not exp or tonumber(exp) <= tonumber(ARGV[1]) then
  return NOT_LIVE
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
return REVOKED
