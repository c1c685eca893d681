-- Checkpointer::messages: KEYS s, h   ARGV now, first index, last index (inclusive)
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local out = redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])
table.insert(out, 1, OK)
return out
