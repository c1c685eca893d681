-- touch: KEYS s, m, cp, h   ARGV now, grace
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
expire_keys(f[2], tonumber(ARGV[2]), KEYS)
return {OK}
