-- load_finish: makes a built sale visible (sets `ready`, drops the lease), if the load still
-- holds its claim. With stock left it publishes `restocked:<id>` (gateways may still hold a
-- sold-out pushed before the sale was lost).
--
-- KEYS: 1 sale, 2 loading, 3 events channel.
-- ARGV: 1 generation, 2 sale id.
-- Returns {code, remaining}: code is a LoadStepCode, {STEP_DONE, remaining} when the sale is
-- ready, {CLAIM_LOST, 0} when the claim was lost.
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  return {CLAIM_LOST, 0}
end
redis.call('HSET', KEYS[1], 'ready', '1')
redis.call('DEL', KEYS[2])
local remaining = tonumber(redis.call('HGET', KEYS[1], 'remaining'))
if remaining > 0 then
  redis.call('PUBLISH', KEYS[3], 'restocked:' .. ARGV[2])
end
return {STEP_DONE, remaining}
