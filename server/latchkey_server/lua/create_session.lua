-- Create a session for a user, enforcing the concurrency policy, in one atomic step.
-- Optionally replace one session (step-up, password change) and end all others
-- (password change), so no moment exists where both old and new are live.
-- With a new password hash (password change), store it in the same step, but only if the
-- user's hash is still the one the caller verified (a concurrent change wins, not both).
-- KEYS[1] new session hash, KEYS[2] the user's session index, KEYS[3] the user's record
-- (same slot by hash tag). Other session hashes of the user are built from ARGV[7].
-- ARGV: 1 sid, 2 absolute_ttl_ms, 3 idle_ms, 4 retention_ms, 5 max_sessions,
--       6 single_session (1/0), 7 session key prefix, 8 refresh hash, 9 auth_level,
--       10 auth_time, 11 device_id, 12 device_name, 13 user_agent, 14 ip,
--       15 replaced sid or '', 16 reason for the replaced session,
--       17 reason to end every other session or '',
--       18 new password hash or '', 19 the password hash the caller verified
-- Returns {created_at_ms, {ended sid, reason, ...}}, or {-1, {}} (nothing changed) when
-- the password hash is no longer the verified one.
local sid, abs_ttl, idle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local retention, max_sessions = tonumber(ARGV[4]), tonumber(ARGV[5])
local prefix = ARGV[7]
if ARGV[18] ~= nil and ARGV[18] ~= '' then
  if redis.call('HGET', KEYS[3], 'p') ~= ARGV[19] then return {-1, {}} end
  redis.call('HSET', KEYS[3], 'p', ARGV[18])
end
local now = now_ms()
local ended = {}

local function finish(other_sid, state, reason)
  end_session(prefix .. other_sid, KEYS[2], other_sid, state, reason, now, retention)
  table.insert(ended, other_sid)
  table.insert(ended, reason)
end

-- Walk the index oldest first: drop dead entries, end expired and replaced sessions.
local live = {}
for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local f = redis.call('HMGET', prefix .. other, 'st', 'a', 'l')
  if f[1] ~= 'live' then
    redis.call('ZREM', KEYS[2], other)
  else
    local why = expiry_reason(tonumber(f[2]), tonumber(f[3]), idle, now)
    if why then
      finish(other, 'expired', why)
    elseif other == ARGV[15] then
      finish(other, 'revoked', ARGV[16])
    elseif ARGV[17] ~= '' then
      finish(other, 'revoked', ARGV[17])
    else
      table.insert(live, other)
    end
  end
end

local keep = max_sessions - 1
if ARGV[6] == '1' then keep = 0 end
for i = 1, #live - keep do
  finish(live[i], 'revoked', 'evicted')
end

redis.call('HSET', KEYS[1], 'st', 'live', 'c', now, 'l', now, 'a', now + abs_ttl,
  'rc', ARGV[8], 'g', 0, 'lv', ARGV[9], 'at', ARGV[10],
  'd', ARGV[11], 'dn', ARGV[12], 'ua', ARGV[13], 'ip', ARGV[14])
redis.call('PEXPIRE', KEYS[1], live_ttl_ms(now + abs_ttl, now, idle, retention))
redis.call('ZADD', KEYS[2], now, sid)
if redis.call('PTTL', KEYS[2]) < abs_ttl + retention then
  redis.call('PEXPIRE', KEYS[2], abs_ttl + retention)
end
return {now, ended}
