-- track_interaction: KEYS s, m, cp, h   ARGV now, grace, tokens in, tokens out, response time (µs), op id ('' = none)
local COUNTERS = {'n', 'ti', 'to', 'rt'}
local NAMES = {'interactions', 'total_tokens_in', 'total_tokens_out', 'total_response_time'}
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'n', 'ti', 'to', 'rt', 'o')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
-- Check every counter before writing any, so a bad one leaves the session as it was.
for i, name in ipairs(NAMES) do
  if not is_count(f[i + 2]) then return {CORRUPT, name} end
end
-- A repeat of an applied op changes nothing and answers with the totals.
if op_answer(f[7], ARGV[6]) then return {OK, f[3], f[4], f[5], f[6]} end
local by = {'1', ARGV[3], ARGV[4], ARGV[5]}
for i, counter in ipairs(COUNTERS) do
  local r = redis.pcall('HINCRBY', KEYS[1], counter, by[i])
  -- The only possible failure left is an overflow: saturate, as SessionStats::record does.
  if type(r) == 'table' and r.err then redis.call('HSET', KEYS[1], counter, I64_MAX) end
end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
op_record(KEYS[1], f[7], ARGV[6], '')
expire_keys(f[2], tonumber(ARGV[2]), KEYS)
local totals = redis.call('HMGET', KEYS[1], 'n', 'ti', 'to', 'rt')
return {OK, totals[1], totals[2], totals[3], totals[4]}
