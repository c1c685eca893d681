-- TurnStore::begin_turn: KEYS s, m, cp, h   ARGV now, cached version ('' = none)
-- Answers the session's fields as get.lua does, the latest version, the number of metadata
-- fields that follow (2 per key) and the metadata; then, unless the cached version is the
-- latest, the latest checkpoint and the log it covers (from the log's start).
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'c', 'u', 'n', 'ti', 'to', 'rt', 'ag')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local v = redis.call('HGET', KEYS[3], 'v') or '0'
if not is_count(v) then return {CORRUPT, 'checkpoint version'} end
local out = {OK}
for i = 1, 9 do out[i + 1] = f[i] end
out[11] = v
local meta = redis.call('HGETALL', KEYS[2])
out[12] = #meta
for i = 1, #meta do out[#out + 1] = meta[i] end
if v == '0' or v == ARGV[2] then return out end
local blob = redis.call('HGET', KEYS[3], v)
if not blob then return out end
-- cp_put.lua and turn_commit.lua write the log length second, in this exact form; the log
-- the latest checkpoint covers is what the log holds up to that length.
local len = string.match(blob, '^{"version":%d+,"log_len":(%d+),')
if not len then return {CORRUPT, 'checkpoint'} end
local start = log_start(KEYS[3])
if not start then return {CORRUPT, 'log start'} end
out[#out + 1] = blob
local last = tonumber(len) - start - 1
if last >= 0 then
  local log = redis.call('LRANGE', KEYS[4], 0, string.format('%d', last))
  for i = 1, #log do out[#out + 1] = log[i] end
end
return out
