-- get: KEYS s, m   ARGV now
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'c', 'u', 'n', 'ti', 'to', 'rt', 'ag')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local out = {OK}
for i = 1, 9 do out[i + 1] = f[i] end
local meta = redis.call('HGETALL', KEYS[2])
for i = 1, #meta do out[#out + 1] = meta[i] end
return out
