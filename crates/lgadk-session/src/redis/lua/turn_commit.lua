-- TurnStore::commit_turn: KEYS s, m, cp, h
-- ARGV now, grace, expected version, retention, metadata limit, checkpoint body (as cp_put),
--      checkpoint op id ('' = none), '1' or the breakdown by agent as add_agents takes it
--      to track an interaction ('' = not), tokens in,
--      tokens out, response time (µs), interaction op id ('' = none), log start (the cut,
--      '0' = none), number of metadata arguments that follow ('' = no merge; 2 per key),
--      metadata key/json pairs..., messages (JSON)...
-- Checks everything (session live, counters, version, merged metadata size) before it
-- writes anything. Answers the version, log length and log start, the four counters and the
-- breakdown by agent and, when it merged, the metadata.
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'n', 'ti', 'to', 'rt', 'o')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local bad = bad_counter({f[3], f[4], f[5], f[6]})
if bad then return {CORRUPT, bad} end
local track = ARGV[8] ~= ''
local merging = ARGV[14] ~= ''
local first_meta = 15
local first_message = first_meta + (merging and tonumber(ARGV[14]) or 0)

local function answer(version, len, start)
  local totals = redis.call('HMGET', KEYS[1], 'n', 'ti', 'to', 'rt', 'ag')
  local out = {OK, version, len, start, totals[1], totals[2], totals[3], totals[4], totals[5]}
  if merging then
    local meta = redis.call('HGETALL', KEYS[2])
    for i = 1, #meta do out[#out + 1] = meta[i] end
  end
  return out
end

-- A repeat of an applied commit writes nothing and answers with what it saved.
local sv, slen, sstart = saved_answer(op_answer(f[7], ARGV[7]))
if sv then return answer(sv, slen, sstart) end
local current = redis.call('HGET', KEYS[3], 'v') or '0'
if not is_count(current) then return {CORRUPT, 'checkpoint version'} end
if current ~= ARGV[3] then return {CONFLICT, current} end
if merging then
  local merged = {}
  local stored = redis.call('HGETALL', KEYS[2])
  for i = 1, #stored, 2 do merged[stored[i]] = stored[i + 1] end
  for i = first_meta, first_message - 1, 2 do merged[ARGV[i]] = ARGV[i + 1] end
  local size = metadata_json_size(merged)
  if size > tonumber(ARGV[5]) then return {TOO_LARGE, size} end
end

local start = log_start(KEYS[3])
if not start then return {CORRUPT, 'log start'} end

-- Every check passed: the checkpoint and its messages (and the log's cut), as cp_put.lua
-- writes them.
local new_start, new_len = place_messages(KEYS[3], KEYS[4], start, start + redis.call('LLEN', KEYS[4]),
  tonumber(ARGV[13]), first_message, #ARGV)
local len = string.format('%d', new_len)
local s = string.format('%d', new_start)
local version = tonumber(current) + 1
local v = string.format('%d', version)
local blob = '{"version":' .. v .. ',"log_len":' .. len .. ',"log_start":' .. s .. ',' .. string.sub(ARGV[6], 2)
redis.call('HSET', KEYS[3], v, blob, 'v', v)
local o = op_record(KEYS[1], f[7], ARGV[7], v .. ',' .. len .. ',' .. s)
local old = version - tonumber(ARGV[4])
while old >= 1 and redis.call('HDEL', KEYS[3], string.format('%d', old)) == 1 do old = old - 1 end
-- The interaction, as track.lua counts it (once per op id).
if track and not op_answer(o, ARGV[12]) then
  add_interaction(KEYS[1], ARGV[9], ARGV[10], ARGV[11])
  add_agents(KEYS[1], ARGV[8])
  op_record(KEYS[1], o, ARGV[12], '')
end
if merging and first_message > first_meta then send_chunked('HSET', KEYS[2], first_meta, first_message - 1) end
if track or merging then
  redis.call('HSET', KEYS[1], 'l', ARGV[1])
  expire_keys(f[2], tonumber(ARGV[2]), KEYS)
else
  -- No activity: the snapshot and log live exactly as long as the session hash, as after a put.
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], ttl)
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
return answer(v, len, s)
