-- gcra: decides rate-limited attempts, in order, atomically (the GCRA step of crate::gcra,
-- mirrored line for line). For each attempt it reads every key's TAT (theoretical arrival
-- time, us; a missing key is a full burst) and, only if all of the attempt's keys pass,
-- charges them; a later attempt sees what an earlier one charged. At the end it writes each
-- charged key's new TAT, expiring when the key is back to a full burst. The clock is Redis's
-- TIME (us), one clock for every gateway.
--
-- KEYS: every attempt's keys, attempt after attempt.
-- ARGV: 1 number of attempts, then per attempt: its number of keys n, then per key (in the
-- order of KEYS): interval (us), period (us).
-- Returns one integer per attempt: ALLOWED when its keys were charged, else the wait (us,
-- > 0) until it would pass.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = {}
local dirty = {}
local answers = {}
local k = 1
local a = 2
for attempt = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local new = {}
  local wait = 0
  for i = 1, n do
    local key = KEYS[k]
    k = k + 1
    local interval = tonumber(ARGV[a])
    local period = tonumber(ARGV[a + 1])
    a = a + 2
    local cur = new[key] or tat[key]
    if not cur then
      local stored = redis.call('GET', key)
      cur = now
      if stored then cur = tonumber(stored) end
      tat[key] = cur
    end
    if cur < now then cur = now end
    local nt = cur + interval
    local ahead = nt - now
    if ahead > period then
      if ahead - period > wait then wait = ahead - period end
    else
      new[key] = nt
    end
  end
  if wait > 0 then
    answers[attempt] = math.ceil(wait)
  else
    for key, nt in pairs(new) do
      tat[key] = nt
      dirty[key] = true
    end
    answers[attempt] = ALLOWED
  end
end
for key in pairs(dirty) do
  local ttl = math.ceil((tat[key] - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f', tat[key]), 'PX', string.format('%.0f', ttl))
end
return answers
