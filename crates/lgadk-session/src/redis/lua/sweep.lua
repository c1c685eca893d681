-- Index sweep after a create (single Redis): KEYS expiry index, the user index (the expiry
-- index again when there is no user), the session hash of each user-index entry checked, then
-- for each expiry-index entry checked its session hash and its user index (the expiry index
-- again when it has no user)
-- ARGV now, user, n, the n user-index entries, the expiry-index entries...
-- Drops index entries that point at nothing, never a session: purge still finds, deletes
-- and counts every expired session it would have found without the sweep.
-- Returns {OK, user-index entries dropped, expiry-index entries dropped}.
local expiry, index, user, n = KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[3])
local dropped_user, dropped_expiry = 0, 0
for i = 1, n do
  local e = ARGV[3 + i]
  if redis.call('ZSCORE', index, e) then
    local f = redis.call('HMGET', KEYS[2 + i], 'ix', 'u', 'l', 't')
    local state = 'stale'
    if f[1] == e and f[2] == user then state = liveness(f[3], f[4]) end
    -- An expired session leaves the listing now; purge deletes it through its expiry entry.
    if state ~= 'live' and state ~= 'corrupt' then
      redis.call('ZREM', index, e)
      dropped_user = dropped_user + 1
    end
  end
end
for i = 4 + n, #ARGV do
  local e = ARGV[i]
  local k = 3 + n + (i - 4 - n) * 2
  local member, owner = string.match(e, '^(%d+|[^|]+)|(.*)$')
  if member and redis.call('ZSCORE', expiry, e) then
    local f = redis.call('HMGET', KEYS[k], 'ix', 'l', 't')
    local state = 'stale'
    if f[1] == member then state = liveness(f[2], f[3]) end
    local t = as_int(f[3])
    if state == 'live' and t >= 0 then
      -- Extended since it was filed: re-file under its current deadline, as purge would.
      redis.call('ZADD', expiry, string.format('%d', as_int(f[2]) + t), e)
    elseif state == 'dead' then
      -- Purge's to delete and count: keep it due, out of the sweep's window for a grace period.
      redis.call('ZADD', expiry, string.format('%d', NOW - 1), e)
    else
      -- Gone, recreated, never expiring or damaged: purge would drop the entry too.
      redis.call('ZREM', expiry, e)
      dropped_expiry = dropped_expiry + 1
      if owner ~= '' and state ~= 'live' and state ~= 'corrupt' then redis.call('ZREM', KEYS[k + 1], member) end
    end
  end
end
return {OK, dropped_user, dropped_expiry}
