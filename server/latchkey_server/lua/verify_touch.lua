-- Verify a session for a protected request, apply the device-binding policy (D3) and
-- touch its idle clock: all in one round trip, atomically.
-- KEYS[1] the user's record (holds the session, and the username a profile view shows).
-- ARGV: 1 sid, 2 idle_ms, 3 retention_ms, 4 binding policy (off|report|enforce),
--       5 the request's device id, 6 its user agent, 7 their fingerprint
-- Returns {'live', auth_level, auth_time, device_id, user_agent, now_ms, username,
--          binding change to report now ('' if none or already reported)}
--      or {'revoked'|'expired', reason[, 'now' when this call ended it[, changed]]}
--      or {'unknown'}.
local sid = ARGV[1]
local f = redis.call('HMGET', KEYS[1], session_field(sid), 'n')
if not f[1] then return {'unknown'} end
local s = decode_session(f[1])
local now = now_ms()
local idle, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
if past_retention(s, now, idle, retention) then return {'unknown'} end
if s.st ~= 'live' then return {s.st, s.r} end
local why = expiry_reason(s.a, s.l, idle, now)
if why then
  end_session(KEYS[1], sid, s, 'expired', why, now)
  return {'expired', why, 'now'}
end

-- Device binding: which of the bound device id and user agent changed, if any.
local changed = {}
if ARGV[4] ~= 'off' then
  if ARGV[5] ~= s.d then table.insert(changed, 'device_id') end
  if ARGV[6] ~= s.ua then table.insert(changed, 'user_agent') end
end
local report, dirty = '', false
if #changed > 0 then
  if ARGV[4] == 'enforce' then
    end_session(KEYS[1], sid, s, 'revoked', 'binding', now)
    return {'revoked', 'binding', 'now', table.concat(changed, ',')}
  end
  -- Report each new (device id, user agent) once per session, not once per request.
  if s.bx ~= ARGV[7] then
    s.bx, report, dirty = ARGV[7], table.concat(changed, ','), true
  end
end

-- Rewrite the idle clock at most once a second: idle limits are minutes, and skipping
-- the write spares the AOF a record on most requests of a busy session.
if now - s.l >= 1000 then
  s.l, dirty = now, true
end
if dirty then save_session(KEYS[1], sid, s) end
return {'live', s.lv, s.at, s.d, s.ua, now, f[2] or '', report}
