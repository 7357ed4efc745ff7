-- End many sessions of one user in one atomic step (L1 logout-all, admin revoke-all).
-- scope 'all' ends every session (the caller's own with its own reason); 'others' ends
-- every session except the caller's. Expired sessions met on the way are marked expired.
-- KEYS[1] the user's session index; session hashes are built from ARGV[1] (same slot).
-- ARGV: 1 session key prefix, 2 caller's sid or '', 3 scope ('all' | 'others'),
--       4 reason for the caller's session, 5 reason for every other session,
--       6 idle_ms, 7 retention_ms
-- Returns {ended sid, reason, ...}; idle/absolute reasons mean the session had expired.
local prefix, current, scope = ARGV[1], ARGV[2], ARGV[3]
local idle, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local ended = {}

for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = prefix .. sid
  local f = redis.call('HMGET', key, 'st', 'a', 'l')
  if f[1] ~= 'live' then
    redis.call('ZREM', KEYS[1], sid)
  else
    local why = expiry_reason(tonumber(f[2]), tonumber(f[3]), idle, now)
    local state, reason = 'revoked', ARGV[5]
    if why then
      state, reason = 'expired', why
    elseif sid == current then
      reason = ARGV[4]
    end
    if why or sid ~= current or scope == 'all' then
      end_session(key, KEYS[1], sid, state, reason, now, retention)
      table.insert(ended, sid)
      table.insert(ended, reason)
    end
  end
end
return ended
