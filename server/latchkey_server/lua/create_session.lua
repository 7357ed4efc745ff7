-- Create a session for a user, enforcing the concurrency policy, in one atomic step.
-- Optionally replace one session (step-up, password change) and end all others
-- (password change), so no moment exists where both old and new are live.
-- With a new password hash (password change), store it in the same step, but only if the
-- user's hash is still the one the caller verified (a concurrent change wins, not both).
-- Records past retention are pruned on the way.
-- KEYS[1] the user's record (holds the password hash and every session of the user).
-- ARGV: 1 sid, 2 absolute_ttl_ms, 3 idle_ms, 4 retention_ms, 5 max_sessions,
--       6 single_session (1/0), 7 ended records to keep, 8 refresh hash, 9 auth_level,
--       10 auth_time, 11 device_id, 12 device name ('' keeps the replaced session's),
--       13 user_agent, 14 ip, 15 replaced sid or '', 16 reason for the replaced session,
--       17 reason to end every other session or '',
--       18 new password hash or '', 19 the password hash the caller verified
-- Returns {created_at_ms, {ended sid, reason, ...}}; or, with nothing changed,
-- {-1, {}} when the password hash is no longer the verified one, and
-- {-2, {state, reason}} when the session to replace is no longer live (it was signed out
-- remotely, or expired, after the caller's request was authenticated: that wins).
local sid, abs_ttl, idle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local retention, max_sessions = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
if ARGV[15] ~= '' then
  local replaced = load_session(KEYS[1], ARGV[15], now, idle, retention)
  if not replaced then return {-2, {'unknown', ''}} end
  if replaced.st ~= 'live' then return {-2, {replaced.st, replaced.r}} end
  local why = expiry_reason(replaced.a, replaced.l, idle, now)
  if why then return {-2, {'expired', why}} end
end
if ARGV[18] ~= '' then
  if redis.call('HGET', KEYS[1], 'p') ~= ARGV[19] then return {-1, {}} end
  redis.call('HSET', KEYS[1], 'p', ARGV[18])
end
local ended = {}
local device_name = ARGV[12]

local function finish(s, state, reason)
  end_session(KEYS[1], s.sid, s, state, reason, now)
  table.insert(ended, s.sid)
  table.insert(ended, reason)
end

-- Walk the user's sessions oldest first: end expired and replaced ones.
local live = {}
for _, s in ipairs(user_sessions(KEYS[1], now, idle, retention, true, tonumber(ARGV[7]))) do
  if s.st == 'live' then
    local why = expiry_reason(s.a, s.l, idle, now)
    if why then
      finish(s, 'expired', why)
    elseif s.sid == ARGV[15] then
      if device_name == '' then device_name = s.dn end
      finish(s, 'revoked', ARGV[16])
    elseif ARGV[17] ~= '' then
      finish(s, 'revoked', ARGV[17])
    else
      table.insert(live, s)
    end
  end
end

local keep = max_sessions - 1
if ARGV[6] == '1' then keep = 0 end
for i = 1, #live - keep do
  finish(live[i], 'revoked', 'evicted')
end

save_session(KEYS[1], sid, {st = 'live', lv = ARGV[9], g = 0, c = now, l = now,
  a = now + abs_ttl, t = 0, at = tonumber(ARGV[10]), rc = ARGV[8], rp = '', d = ARGV[11],
  dn = device_name, ua = ARGV[13], ip = ARGV[14], bx = '', r = ''})
return {now, ended}
