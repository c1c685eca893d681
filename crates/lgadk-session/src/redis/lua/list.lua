-- list_user_sessions (single Redis), one batch: KEYS user index, then the session hash of each
-- checked entry   ARGV now, user, n, the n checked entries (in KEYS order), entries to drop...
-- The client read the entries (newest first) and names every session hash here, so the
-- script touches only declared keys. Returns {OK, live entry...} in the order given; entries
-- whose session is missing, expired, recreated or owned by someone else are removed, and so
-- are the entries to drop (not index members lgadk writes). An entry removed meanwhile is
-- skipped.
local index, user, n = KEYS[1], ARGV[2], tonumber(ARGV[3])
local out = {OK}
for i = 1, n do
  local e = ARGV[3 + i]
  if redis.call('ZSCORE', index, e) then
    local f = redis.call('HMGET', KEYS[1 + i], 'ix', 'u', 'l', 't')
    local live = false
    if f[1] == e and f[2] == user then
      local state, field = liveness(f[3], f[4])
      if state == 'corrupt' then return {CORRUPT, string.match(e, '^%d+|(.+)$'), field} end
      live = state == 'live'
    end
    if live then
      out[#out + 1] = e
    else
      redis.call('ZREM', index, e)
    end
  end
end
for i = 4 + n, #ARGV do redis.call('ZREM', index, ARGV[i]) end
return out
