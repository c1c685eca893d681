-- purge_expired (single Redis), one batch: KEYS expiry index   ARGV now, prefix, batch size
-- Index entries are `member|user` scored by a deadline that may be stale: writes do not
-- touch the index, so an entry that comes due for a session extended meanwhile is re-filed.
-- Returns {removed, entries seen}.
local index, prefix = KEYS[1], ARGV[2]
local due = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, e in ipairs(due) do
  local member, id, user = string.match(e, '^(%d+|([^|]+))|(.*)$')
  local refiled = false
  if member then
    local base = prefix .. ':{' .. id .. '}:'
    local f = redis.call('HMGET', base .. 's', 'ix', 'l', 't')
    local state = 'stale'
    if f[1] == member then state = liveness(f[2], f[3]) end
    if state == 'live' then
      local t = as_int(f[3])
      if t >= 0 then
        redis.call('ZADD', index, string.format('%d', as_int(f[2]) + t), e)
        refiled = true
      end
    elseif state ~= 'corrupt' then
      -- Missing, recreated (stale entry) or expired: its user-index entry goes too.
      if user ~= '' then redis.call('ZREM', prefix .. ':u:{' .. user .. '}', member) end
      if state == 'dead' then
        redis.call('DEL', base .. 's', base .. 'm', base .. 'cp', base .. 'h')
        removed = removed + 1
      end
    end
  end
  if not refiled then redis.call('ZREM', index, e) end
end
return {removed, #due}
