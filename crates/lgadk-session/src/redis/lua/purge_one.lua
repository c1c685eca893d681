-- purge_expired on a cluster, one session: KEYS s, m, cp, h   ARGV now, index member
-- Returns {NOT_FOUND} missing, {OK} removed, {LIVE, deadline} still live, {CORRUPT} damaged,
-- {STALE} the entry is stale (recreated session, or one that never expires).
local f = redis.call('HMGET', KEYS[1], 'ix', 'l', 't')
if not f[1] then return {NOT_FOUND} end
if f[1] ~= ARGV[2] then return {STALE} end
local state = liveness(f[2], f[3])
if state == 'dead' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return {OK}
end
if state == 'live' then
  local t = as_int(f[3])
  if t >= 0 then return {LIVE, string.format('%d', as_int(f[2]) + t)} end
  return {STALE}
end
return {CORRUPT}
