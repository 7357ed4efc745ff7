-- End many sessions of one user in one atomic step (L1 logout-all, admin revoke-all).
-- scope 'all' ends every session (the caller's own with its own reason); 'others' ends
-- every session except the caller's. Expired sessions met on the way are marked expired,
-- and records past retention are pruned.
-- KEYS[1] the user's record (holds every session of the user).
-- ARGV: 1 ended records to keep, 2 caller's sid or '', 3 scope ('all' | 'others'),
--       4 reason for the caller's session, 5 reason for every other session,
--       6 idle_ms, 7 retention_ms
-- The user's credential generation moves on too, so a login whose password check began
-- before this commit is refused when it tries to create its session (create_session.lua):
-- after logout-all returns, nothing authorised before it is live.
-- Returns {ended sid, reason, ...}; idle/absolute reasons mean the session had expired.
local current, scope = ARGV[2], ARGV[3]
local idle, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local ended = {}
if redis.call('HEXISTS', KEYS[1], 'n') == 1 then redis.call('HINCRBY', KEYS[1], 'g', 1) end

for _, s in ipairs(user_sessions(KEYS[1], now, idle, retention, true, tonumber(ARGV[1]))) do
  if s.st == 'live' then
    local why = expiry_reason(s.a, s.l, idle, now)
    local state, reason = 'revoked', ARGV[5]
    if why then
      state, reason = 'expired', why
    elseif s.sid == current then
      reason = ARGV[4]
    end
    if why or s.sid ~= current or scope == 'all' then
      end_session(KEYS[1], s.sid, s, state, reason, now)
      table.insert(ended, s.sid)
      table.insert(ended, reason)
    end
  end
end
return ended
