-- give_back(sale, user, qty, events, sale_id, order): a function, not a script; prepended to
-- release.lua and void.lua, the scripts that give stock back.
--
-- Gives a hold's units back to its sale: drops `order` from the sale's `holds` set, adds `qty`
-- to `remaining` (publishing `restocked:<sale_id>` on `events` when that makes the first units
-- available again) and takes `qty` off the user's entry in the sale's `held` hash (dropping the
-- entry at zero).
--
-- Arguments: sale (the sale's key), user, qty (string), events (the events channel), sale_id,
-- order (32 hex digits). Returns nothing.
local function give_back(sale, user, qty, events, sale_id, order)
  redis.call('SREM', sale .. ':holds', order)
  local now_left = redis.call('HINCRBY', sale, 'remaining', qty)
  if now_left > 0 and now_left <= tonumber(qty) then
    redis.call('PUBLISH', events, 'restocked:' .. sale_id)
  end
  local held = sale .. ':held'
  local left = redis.call('HINCRBY', held, user, string.format('%.0f', -tonumber(qty)))
  if left <= 0 then
    redis.call('HDEL', held, user)
  end
end
