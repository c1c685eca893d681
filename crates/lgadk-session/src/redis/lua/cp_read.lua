-- Checkpointer::latest / checkpoint / list: KEYS s, cp   ARGV now, 'one' | 'list', version | limit
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
if ARGV[2] == 'one' then return {OK, redis.call('HGET', KEYS[2], ARGV[3])} end
local v = redis.call('HGET', KEYS[2], 'v')
if not v then return {OK} end
if not is_count(v) then return {CORRUPT, 'checkpoint version'} end
local limit = tonumber(ARGV[3])
local out = {OK}
local k = tonumber(v)
while k >= 1 and #out <= limit do
  local blob = redis.call('HGET', KEYS[2], string.format('%d', k))
  if not blob then break end
  out[#out + 1] = blob
  k = k - 1
end
return out
