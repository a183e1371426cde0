-- revocations: a page of the revocation log after a position. Runs after ensure_epoch.lua.
--
-- KEYS: 1 epoch, 2 sequence, 3 log, 4 log by expiry (as ensure_epoch).
-- ARGV: 1 now (Unix ms), 2 after (position), 3 page limit.
-- Returns {epoch, last, {jti, ...}}: the jtis logged after ARGV 2, at most ARGV 3 of them;
-- last is the position of the page's last entry when the page is full, else the last position
-- handed out (the page reaches the end of the log).
local epoch = ensure_epoch()
local limit = tonumber(ARGV[3])
local page = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[2], '+inf', 'WITHSCORES',
  'LIMIT', 0, limit)
local jtis = {}
for i = 1, #page, 2 do
  jtis[#jtis + 1] = page[i]
end
local last
if #jtis >= limit then
  last = page[#page]
else
  last = redis.call('GET', KEYS[2]) or '0'
end
return {epoch, last, jtis}
