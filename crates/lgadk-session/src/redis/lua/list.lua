-- list_user_sessions (single Redis): KEYS user index
-- ARGV now, prefix, user, start bound ('+' or '(' .. member), limit
-- Returns {OK, more, member...}: up to `limit` live sessions newest first; `more` is 1 when
-- another live one follows. Entries whose session is missing, expired, recreated or owned
-- by someone else are removed on the way.
local key, prefix, user = KEYS[1], ARGV[2], ARGV[3]
local bound, limit = ARGV[4], tonumber(ARGV[5])
local out = {OK, 0}
local found = 0
while true do
  local want = limit + 1 - found
  local entries = redis.call('ZREVRANGEBYLEX', key, bound, '-', 'LIMIT', 0, want)
  for _, e in ipairs(entries) do
    bound = '(' .. e
    local id = string.match(e, '^%d+|(.+)$')
    local live = false
    if id then
      local f = redis.call('HMGET', prefix .. ':{' .. id .. '}:s', 'ix', 'u', 'l', 't')
      if f[1] == e and f[2] == user then
        local state, field = liveness(f[3], f[4])
        if state == 'corrupt' then return {CORRUPT, id, field} end
        live = state == 'live'
      end
    end
    if live then
      if found == limit then
        out[2] = 1
        return out
      end
      found = found + 1
      out[#out + 1] = e
    else
      redis.call('ZREM', key, e)
    end
  end
  if #entries < want then return out end
end
