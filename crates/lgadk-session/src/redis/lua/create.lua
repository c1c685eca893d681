-- create: KEYS s, m, cp, h [, user index, expiry index]  (the last two on a single Redis only)
-- ARGV now, grace, member, user ('' = none), timeout ms (-1 = never), prefix, op id ('' = none),
--      metadata field/json pairs...
local s, m, cp, h = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local member, user, timeout = ARGV[3], ARGV[4], ARGV[5]
local old = redis.call('HMGET', s, 'l', 't', 'u', 'ix', 'o', 'c')
local state, field = liveness(old[1], old[2])
if state == 'live' then
  -- The same creation, repeated: answer as the first time, with its times.
  if op_answer(old[5], ARGV[7]) then return {OK, old[3] or '', old[4] or '', old[6], old[1]} end
  return {EXISTS, old[3] or '', old[4] or ''}
end
if state == 'corrupt' then return {CORRUPT, field} end
-- Whatever is left of an expired session with this id (or stray keys) goes first.
redis.call('DEL', s, m, cp, h)
local inline = #KEYS == 6
if inline and old[4] then
  -- The old owner's user index is declared only when it is this user's: otherwise the client
  -- removes that entry after this call (it is stale from now on: `ix` changes).
  if old[3] and old[3] == user then redis.call('ZREM', KEYS[5], old[4]) end
  redis.call('ZREM', KEYS[6], old[4] .. '|' .. (old[3] or ''))
end
local fields = {'ix', member, 'c', ARGV[1], 'l', ARGV[1], 't', timeout, 'n', '0', 'ti', '0', 'to', '0', 'rt', '0'}
if user ~= '' then
  fields[#fields + 1] = 'u'
  fields[#fields + 1] = user
end
if ARGV[7] ~= '' then
  fields[#fields + 1] = 'o'
  fields[#fields + 1] = ARGV[7] .. '=;'
end
redis.call('HSET', s, unpack(fields))
if #ARGV >= 8 then send_chunked('HSET', m, 8, #ARGV) end
expire_keys(timeout, tonumber(ARGV[2]), {s, m})
if inline then
  if user ~= '' then redis.call('ZADD', KEYS[5], 0, member) end
  local t = as_int(timeout)
  if t >= 0 then redis.call('ZADD', KEYS[6], string.format('%d', NOW + t), member .. '|' .. user) end
end
return {OK, old[3] or '', old[4] or ''}
