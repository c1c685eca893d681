-- end: KEYS s, m, cp, h [, expiry index [, owner's user index]]  (indexes on a single Redis only)
-- ARGV now, expected owner ('' = none, '*' = do not check: the cluster client cleans the
-- indexes itself).
-- Returns {OK if it was live else NOT_FOUND, user, member}, or {OTHER_OWNER, user, member}
-- without changing anything when the owner is not the expected one: its user index was not
-- declared, so the client calls again with it.
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'u', 'ix')
if ARGV[2] ~= '*' and (f[3] or '') ~= ARGV[2] then return {OTHER_OWNER, f[3] or '', f[4] or ''} end
local state = liveness(f[1], f[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if #KEYS >= 5 and f[4] then
  redis.call('ZREM', KEYS[5], f[4] .. '|' .. (f[3] or ''))
  if f[3] and #KEYS == 6 then redis.call('ZREM', KEYS[6], f[4]) end
end
local ended = NOT_FOUND
if state == 'live' or state == 'corrupt' then ended = OK end
return {ended, f[3] or '', f[4] or ''}
