-- ensure_epoch(): a function, not a script; prepended to every session script, each of which
-- calls it first.
--
-- Makes sure the epoch exists and returns it. A missing epoch means a new data set (after a
-- FLUSHALL, or a restart of a Redis without persistence): it is created (SET NX) with the
-- caller's clock, and any leftover revocation log is dropped with it, so gateways restart from
-- position 0 of a new epoch. The caller's clock (ARGV 1), not Redis TIME, keeps the scripts
-- deterministic (safe under verbatim script replication and AOF) and on the same clock as the
-- session expiries.
--
-- Reads the scripts' common KEYS: 1 epoch, 2 sequence, 3 log, 4 log by expiry; and ARGV 1:
-- the caller's now (Unix ms). Returns the epoch (Unix ms, as a string).
local function ensure_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch, 'NX')
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  end
  return epoch
end
