-- audit: checks a sale's counters against its live holds (those in its `holds` set whose hold
-- is of this sale and build and unreleased) and, with ARGV 4 = `1`, sets them to match, drops
-- set members that are not live holds, and publishes `restocked:<id>` / `sold_out:<id>` when
-- `remaining` crosses zero. One atomic step: no reserve or release runs in between.
--
-- KEYS: 1 sale, 2 held, 3 the sale's holds, 4 events channel.
-- ARGV: 1 prefix of hold keys, 2 sale id, 3 stock, 4 repair (`0`/`1`).
-- Returns {code, remaining before, remaining after, users, holds}; code is an AuditCode:
-- {NOT_READY, 0, 0, {}, {}} when the sale is not ready, {NO_HOLDS_SET, 0, 0, {}, {}} when it
-- was built without the `holds` set, else {AUDITED, remaining before, remaining after,
-- {user, before, after, ...} per buyer whose `held` entry is off, {order, user, qty, touched,
-- ...} per live hold}.
local s = redis.call('HMGET', KEYS[1], 'ready', 'remaining', 'gen', 'layout')
if s[1] ~= '1' then
  return {NOT_READY, 0, 0, {}, {}}
end
if s[4] ~= '2' then
  return {NO_HOLDS_SET, 0, 0, {}, {}}
end
local repair = ARGV[4] == '1'
local total = 0
local per_user = {}
local holds = {}
for _, order in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local h = redis.call('HMGET', ARGV[1] .. order, 'sale', 'user', 'qty', 'released', 'gen',
    'touched')
  if h[1] == ARGV[2] and h[4] == '0' and h[5] == s[3] then
    local qty = tonumber(h[3])
    total = total + qty
    per_user[h[2]] = (per_user[h[2]] or 0) + qty
    holds[#holds + 1] = order
    holds[#holds + 1] = h[2]
    holds[#holds + 1] = h[3]
    holds[#holds + 1] = h[6]
  elseif repair then
    redis.call('SREM', KEYS[3], order)
  end
end
local users = {}
local function fix(user, before, want)
  users[#users + 1] = user
  users[#users + 1] = string.format('%.0f', before)
  users[#users + 1] = string.format('%.0f', want)
  if repair then
    if want == 0 then
      redis.call('HDEL', KEYS[2], user)
    else
      redis.call('HSET', KEYS[2], user, string.format('%.0f', want))
    end
  end
end
local held = redis.call('HGETALL', KEYS[2])
local counted = {}
for i = 1, #held, 2 do
  local user, units = held[i], tonumber(held[i + 1])
  counted[user] = true
  local want = per_user[user] or 0
  if units ~= want then
    fix(user, units, want)
  end
end
for user, want in pairs(per_user) do
  if not counted[user] then
    fix(user, 0, want)
  end
end
local before = tonumber(s[2])
local after = tonumber(ARGV[3]) - total
if repair and after ~= before then
  redis.call('HSET', KEYS[1], 'remaining', string.format('%.0f', after))
  if before <= 0 and after > 0 then
    redis.call('PUBLISH', KEYS[4], 'restocked:' .. ARGV[2])
  elseif before > 0 and after <= 0 then
    redis.call('PUBLISH', KEYS[4], 'sold_out:' .. ARGV[2])
  end
end
return {AUDITED, s[2], string.format('%.0f', after), users, holds}
