-- put: stores a session (replacing one of the same jti), expiring (PEXPIREAT) at its expiry.
-- Runs after ensure_epoch.lua.
--
-- KEYS: 1 epoch, 2 sequence, 3 log, 4 log by expiry (as ensure_epoch), 5 the session.
-- ARGV: 1 now (Unix ms), 2 user, 3 role, 4 ip hash, 5 user-agent hash, 6 expiry (Unix ms).
-- Returns STORED.
ensure_epoch()
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[5], 'user', ARGV[2], 'role', ARGV[3], 'ip', ARGV[4], 'ua', ARGV[5],
  'exp', ARGV[6])
redis.call('PEXPIREAT', KEYS[5], ARGV[6])
return STORED
