-- purge_expired on a cluster, one session: KEYS s, m, cp, h   ARGV now, index member
-- Returns {0} missing, {1} removed, {2, deadline} still live, {3} corrupt, {4} entry is stale.
local f = redis.call('HMGET', KEYS[1], 'ix', 'l', 't')
if not f[1] then return {0} end
if f[1] ~= ARGV[2] then return {4} end
local state = liveness(f[2], f[3])
if state == 'dead' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return {1}
end
if state == 'live' then
  local t = as_int(f[3])
  if t >= 0 then return {2, string.format('%d', as_int(f[2]) + t)} end
  return {4}
end
return {3}
