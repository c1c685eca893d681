-- purge_expired (single Redis), one batch: KEYS expiry index, then five keys per checked
-- entry: its session's s, m, cp, h and its user index (the expiry index again when it has no
-- user)   ARGV now, n, the n checked entries (in KEYS order), entries to drop...
-- The client read the due entries and names every key here, so the script touches only
-- declared keys. Entries are `member|user` scored by a deadline that may be stale: writes
-- do not touch the index, so an entry that comes due for a session extended meanwhile is
-- re-filed. An entry removed meanwhile is skipped. Returns {OK, removed}.
local index, n = KEYS[1], tonumber(ARGV[2])
local removed = 0
for i = 1, n do
  local e = ARGV[2 + i]
  local k = 1 + (i - 1) * 5
  local member, user = string.match(e, '^(%d+|[^|]+)|(.*)$')
  if not member then
    redis.call('ZREM', index, e)
  elseif redis.call('ZSCORE', index, e) then
    local f = redis.call('HMGET', KEYS[k + 1], 'ix', 'l', 't')
    local state = 'stale'
    if f[1] == member then state = liveness(f[2], f[3]) end
    local refiled = false
    if state == 'live' then
      local t = as_int(f[3])
      if t >= 0 then
        redis.call('ZADD', index, string.format('%d', as_int(f[2]) + t), e)
        refiled = true
      end
    elseif state ~= 'corrupt' then
      -- Missing, recreated (stale entry) or expired: its user-index entry goes too.
      if user ~= '' then redis.call('ZREM', KEYS[k + 5], member) end
      if state == 'dead' then
        redis.call('DEL', KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4])
        removed = removed + 1
      end
    end
    if not refiled then redis.call('ZREM', index, e) end
  end
end
for i = 3 + n, #ARGV do redis.call('ZREM', index, ARGV[i]) end
return {OK, removed}
