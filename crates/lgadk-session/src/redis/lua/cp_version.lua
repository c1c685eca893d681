-- Checkpointer::version: KEYS s, cp   ARGV now
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local v = redis.call('HGET', KEYS[2], 'v')
if not v then return {OK, '0'} end
if not is_count(v) then return {CORRUPT, 'checkpoint version'} end
return {OK, v}
