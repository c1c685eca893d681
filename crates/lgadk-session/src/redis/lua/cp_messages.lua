-- Checkpointer::messages: KEYS s, h, cp   ARGV now, first position, last position (inclusive)
-- Positions before the log's start (what a cut dropped) are not returned.
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local start = log_start(KEYS[3])
if not start then return {CORRUPT, 'log start'} end
local first = math.max(tonumber(ARGV[2]) - start, 0)
local last = tonumber(ARGV[3]) - start
local out = {}
if last >= first then out = redis.call('LRANGE', KEYS[2], string.format('%d', first), string.format('%d', last)) end
table.insert(out, 1, OK)
return out
