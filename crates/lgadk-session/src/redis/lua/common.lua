-- lgadk: helpers prepended to every script. ARGV[1] is always the caller's clock
-- (ms since the epoch): expiry is decided by the client's clock, never by Redis' own.
local NOW = tonumber(ARGV[1])
-- Status codes, the first element of every reply: defined in scripts.rs (`status`), which a
-- test checks these against.
local OK, NOT_FOUND, EXISTS, CONFLICT, CORRUPT, TOO_LARGE = 1, 0, -1, -2, -3, -4
local OTHER_OWNER, LIVE, STALE = 2, 3, 4
local I64_MAX = '9223372036854775807'
-- Longest garbage-collection TTL: 100 years.
local MAX_TTL = 3153600000000

-- A counter as lgadk writes it: a non-negative integer that fits in an i64, no sign, no
-- leading zeros.
local function is_count(v)
  if not v then return false end
  if v ~= '0' and not string.match(v, '^[1-9]%d*$') then return false end
  return #v < 19 or (#v == 19 and v <= I64_MAX)
end

-- A time or duration in ms (may be negative: -1 is "never"); nil unless an exact integer.
local function as_int(v)
  if type(v) ~= 'string' or #v > 17 or not string.match(v, '^%-?%d+$') then return nil end
  return tonumber(v)
end

-- 'live', 'dead' or 'missing' for the session whose `l` (last active) and `t` (timeout)
-- fields are given; 'corrupt' and the field's name when one does not decode.
local function liveness(l, t)
  if not l then return 'missing' end
  local last = as_int(l)
  if not last then return 'corrupt', 'last_active' end
  local timeout = as_int(t)
  if not timeout then return 'corrupt', 'timeout' end
  if timeout < 0 or NOW - last <= timeout then return 'live' end
  return 'dead'
end

-- PEXPIRE every key with the session's idle timeout plus the grace period, as garbage
-- collection only; sessions that never expire keep no TTL.
local function expire_keys(t, grace, keys)
  local timeout = as_int(t)
  if not timeout or timeout < 0 then return end
  local ttl = string.format('%d', math.min(timeout + grace, MAX_TTL))
  for _, key in ipairs(keys) do
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Sends ARGV[first..last] to `cmd key ...` in chunks (Lua's unpack has a stack limit).
-- Chunks are even-sized, so field/value pairs stay together.
local function send_chunked(cmd, key, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + 999, last)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end

-- Length of `s` as a JSON string literal, escaped the way serde_json escapes it.
local function json_str_len(s)
  local n = #s + 2
  for c in string.gmatch(s, '[%z\1-\31"\\]') do
    if c == '"' or c == '\\' or c == '\b' or c == '\f' or c == '\n' or c == '\r' or c == '\t' then
      n = n + 1
    else
      n = n + 5
    end
  end
  return n
end

-- Size of a metadata map (field -> JSON text) as compact JSON: `{` `"key":value` joined by
-- `,` `}`, as `lgadk_core::session::metadata_size` counts it.
local function metadata_json_size(map)
  local size, count = 2, 0
  for k, v in pairs(map) do
    size = size + json_str_len(k) + 1 + #v
    count = count + 1
  end
  if count > 1 then size = size + count - 1 end
  return size
end

-- The session hash's counters (`n`, `ti`, `to`, `rt`) and their names in errors.
local COUNTERS = {'n', 'ti', 'to', 'rt'}
local COUNTER_NAMES = {'interactions', 'total_tokens_in', 'total_tokens_out', 'total_response_time'}

-- The name of the first counter in `values` (the four, in COUNTERS order) that is not a
-- count, or nil: checked before writing any, so a bad one leaves the session as it was.
local function bad_counter(values)
  for i, name in ipairs(COUNTER_NAMES) do
    if not is_count(values[i]) then return name end
  end
  return nil
end

-- Adds one interaction to the session hash `s`; a counter that would overflow saturates at
-- i64::MAX, as `SessionStats::record` does.
local function add_interaction(s, tokens_in, tokens_out, response_us)
  local by = {'1', tokens_in, tokens_out, response_us}
  for i, counter in ipairs(COUNTERS) do
    local r = redis.pcall('HINCRBY', s, counter, by[i])
    if type(r) == 'table' and r.err then redis.call('HSET', s, counter, I64_MAX) end
  end
end

-- Adds a turn's breakdown by agent (`shares`: JSON `[[agent, tokens in, tokens out, µs], ...]`,
-- each agent once) to field `ag` of the session hash `s`: a JSON object of
-- `[interactions, tokens in, tokens out, µs]` by agent. Counts stop at 2^53, which Lua's
-- numbers and JSON hold exactly.
local function add_agents(s, shares)
  if shares == nil or shares == '' or shares == '1' then return end
  local stored = redis.call('HGET', s, 'ag')
  local all = stored and cjson.decode(stored) or {}
  local limit = 9007199254740992
  local function add(a, b) return math.min(a + b, limit) end
  for _, share in ipairs(cjson.decode(shares)) do
    local agent = tostring(share[1])
    local was = all[agent] or {0, 0, 0, 0}
    all[agent] = {add(was[1], 1), add(was[2], share[2]), add(was[3], share[3]), add(was[4], share[4])}
  end
  redis.call('HSET', s, 'ag', cjson.encode(all))
end

-- Operation ids: field `o` of the session hash holds the last OPS_KEPT (= OP_ID_WINDOW) ids
-- applied to the session, oldest first, as `<32 hex>=<answer>;` entries. It lives and dies
-- with the session hash.
local OPS_KEPT = 16

-- The answer recorded for `op` in `o` (the field's value), or nil if it was not applied.
local function op_answer(o, op)
  if op == '' or not o then return nil end
  local at = string.find(o, op .. '=', 1, true)
  if not at then return nil end
  local stop = string.find(o, ';', at, true) or (#o + 1)
  return string.sub(o, at + #op + 1, stop - 1)
end

-- Records `op` with its answer in the session hash `s`, forgetting the oldest beyond OPS_KEPT;
-- returns the field's new value (for a second record in the same script).
local function op_record(s, o, op, answer)
  if op == '' then return o end
  o = (o or '') .. op .. '=' .. answer .. ';'
  local _, n = string.gsub(o, ';', '')
  while n > OPS_KEPT do
    o = string.sub(o, string.find(o, ';', 1, true) + 1)
    n = n - 1
  end
  redis.call('HSET', s, 'o', o)
  return o
end

-- The message log's first position: field `s` of the checkpoint hash `cp` (absent until a cut;
-- list index i of the log `h` is position s + i). nil when stored data is bad.
local function log_start(cp)
  local s = redis.call('HGET', cp, 's') or '0'
  if not is_count(s) then return nil end
  return tonumber(s)
end

-- Cuts the log `h` (positions start..len) at `cut` and appends ARGV[first..last], as
-- NewCheckpoint::placement places them: positions below `cut` go (all of them when it is
-- past the end; the messages then start at `cut`). Returns the new start and length.
local function place_messages(cp, h, start, len, cut, first, last)
  local new_start = math.max(start, cut)
  if cut >= len then
    if len > start then redis.call('DEL', h) end
  elseif cut > start then
    redis.call('LTRIM', h, cut - start, -1)
  end
  if last >= first then send_chunked('RPUSH', h, first, last) end
  if new_start ~= start then redis.call('HSET', cp, 's', string.format('%d', new_start)) end
  return new_start, math.max(len, cut) + math.max(last - first + 1, 0)
end

-- An op id's recorded checkpoint answer `<version>,<log_len>[,<log_start>]` as three strings.
local function saved_answer(done)
  if not done then return nil end
  local v, len, s = string.match(done, '^(%d+),(%d+),?(%d*)$')
  if not v then return nil end
  if s == '' then s = '0' end
  return v, len, s
end
