-- Checkpointer::put: KEYS s, m, cp, h
-- ARGV now, expected version, retention, body (a JSON object without version and log_len),
--      op id ('' = none), messages (JSON)...
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'o')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
-- A repeat of an applied op writes nothing and answers with what it saved: `<version>,<log_len>`.
local done = op_answer(f[3], ARGV[5])
local comma = done and string.find(done, ',', 1, true)
if comma then return {OK, string.sub(done, 1, comma - 1), string.sub(done, comma + 1)} end
local current = redis.call('HGET', KEYS[3], 'v') or '0'
if not is_count(current) then return {CORRUPT, 'checkpoint version'} end
if current ~= ARGV[2] then return {CONFLICT, current} end
if #ARGV >= 6 then send_chunked('RPUSH', KEYS[4], 6, #ARGV) end
local len = string.format('%d', redis.call('LLEN', KEYS[4]))
local version = tonumber(current) + 1
local v = string.format('%d', version)
local blob = '{"version":' .. v .. ',"log_len":' .. len .. ',' .. string.sub(ARGV[4], 2)
redis.call('HSET', KEYS[3], v, blob, 'v', v)
op_record(KEYS[1], f[3], ARGV[5], v .. ',' .. len)
-- Retention: drop the checkpoint that just fell out of the window (and any older ones left
-- by a larger retention before).
local old = version - tonumber(ARGV[3])
while old >= 1 and redis.call('HDEL', KEYS[3], string.format('%d', old)) == 1 do old = old - 1 end
-- The snapshot and log live exactly as long as the session hash (no bump of last_active).
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return {OK, v, len}
