-- load_begin: claims a sale for building. A ready sale is left alone; a claim (the `loading`
-- lease) held by another load makes the caller wait. Otherwise hands out a new generation,
-- resets the sale (counters, `held`, `holds`; not ready) and takes the lease.
--
-- KEYS: 1 sale, 2 held, 3 loading, 4 generation, 5 the sale's holds.
-- ARGV: 1 stock, 2 limit, 3 starts, 4 ends (Unix ms), 5 lease (ms).
-- Returns the new generation (a positive integer), or a ClaimCode: ALREADY_BUILT when the sale
-- is built already, BUILD_IN_PROGRESS while another load holds the claim, OTHER_SALE when a
-- built sale of this id has another limit or window (another database's sale).
local built = redis.call('HMGET', KEYS[1], 'ready', 'limit', 'starts', 'ends')
if built[1] == '1' then
  if built[2] ~= ARGV[2] or built[3] ~= ARGV[3] or built[4] ~= ARGV[4] then
    return OTHER_SALE
  end
  return ALREADY_BUILT
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return BUILD_IN_PROGRESS
end
local gen = string.format('%.0f', redis.call('INCR', KEYS[4]))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('HSET', KEYS[1], 'remaining', ARGV[1], 'limit', ARGV[2], 'starts', ARGV[3],
  'ends', ARGV[4], 'gen', gen, 'layout', '2')
redis.call('SET', KEYS[3], gen, 'PX', ARGV[5])
return tonumber(gen)
