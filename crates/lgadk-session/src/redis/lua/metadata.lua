-- update_metadata: KEYS s, m, cp, h   ARGV now, grace, limit, 'merge' | 'replace', field/json pairs...
local f = redis.call('HMGET', KEYS[1], 'l', 't')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local merge = ARGV[4] == 'merge'
local merged = {}
if merge then
  local current = redis.call('HGETALL', KEYS[2])
  for i = 1, #current, 2 do merged[current[i]] = current[i + 1] end
end
for i = 5, #ARGV, 2 do merged[ARGV[i]] = ARGV[i + 1] end
local size = metadata_json_size(merged)
if size > tonumber(ARGV[3]) then return {TOO_LARGE, size} end
if not merge then redis.call('DEL', KEYS[2]) end
if #ARGV >= 5 then send_chunked('HSET', KEYS[2], 5, #ARGV) end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
expire_keys(f[2], tonumber(ARGV[2]), KEYS)
local out = {OK}
for k, v in pairs(merged) do
  out[#out + 1] = k
  out[#out + 1] = v
end
return out
