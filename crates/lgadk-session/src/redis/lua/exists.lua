-- exists: KEYS s   ARGV now
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state == 'live' then return {OK} end
return {NOT_FOUND}
