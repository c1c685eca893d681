-- end: KEYS s, m, cp, h [, expiry index]  (the last on a single Redis only)   ARGV now, prefix
-- Returns {was live (1/0), user, member} so a cluster client can clean the indexes after.
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'u', 'ix')
local state = liveness(f[1], f[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if #KEYS == 5 and f[4] then
  if f[3] then redis.call('ZREM', ARGV[2] .. ':u:{' .. f[3] .. '}', f[4]) end
  redis.call('ZREM', KEYS[5], f[4] .. '|' .. (f[3] or ''))
end
local was_live = 0
if state == 'live' or state == 'corrupt' then was_live = 1 end
return {was_live, f[3] or '', f[4] or ''}
