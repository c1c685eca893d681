-- track_interaction: KEYS s, m, cp, h   ARGV now, grace, tokens in, tokens out, response time (µs), op id ('' = none),
--   the breakdown by agent as add_agents takes it ('' = none)
local f = redis.call('HMGET', KEYS[1], 'l', 't', 'n', 'ti', 'to', 'rt', 'o', 'ag')
local state, field = liveness(f[1], f[2])
if state == 'corrupt' then return {CORRUPT, field} end
if state ~= 'live' then return {NOT_FOUND} end
local bad = bad_counter({f[3], f[4], f[5], f[6]})
if bad then return {CORRUPT, bad} end
-- A repeat of an applied op changes nothing and answers with the totals.
if op_answer(f[7], ARGV[6]) then return {OK, f[3], f[4], f[5], f[6], f[8]} end
add_interaction(KEYS[1], ARGV[3], ARGV[4], ARGV[5])
add_agents(KEYS[1], ARGV[7])
redis.call('HSET', KEYS[1], 'l', ARGV[1])
op_record(KEYS[1], f[7], ARGV[6], '')
expire_keys(f[2], tonumber(ARGV[2]), KEYS)
local totals = redis.call('HMGET', KEYS[1], 'n', 'ti', 'to', 'rt', 'ag')
return {OK, totals[1], totals[2], totals[3], totals[4], totals[5]}
