-- Verify a session for a protected request, apply the device-binding policy (D3) and
-- touch its idle clock: all in one round trip, atomically.
-- KEYS[1] the user's record (holds the session, and the username a profile view shows);
-- KEYS[2] (optional) the user's DPoP jti set, when the request carries a proof.
-- ARGV: 1 sid, 2 idle_ms, 3 retention_ms, 4 binding policy (off|report|enforce),
--       5 the request's device id, 6 its user agent, 7 their fingerprint,
--       8 a refresh hash or '' (introspection of a refresh token: it must be the current
--         one, or the previous one inside its grace window, else the answer is unknown)
--       9 a DPoP proof's jti (with KEYS[2]), 10 how long to remember it (ms), 11 how
--         many a user's set may hold (dpop_jti_fresh in the prelude)
--       12 (optional) 'revoke': the request carried this DPoP-bound session's token
--         without a proof by its key and DPOP_STOLEN_TOKEN=revoke: a live session ends
--         now, reason 'stolen' (the token server and every resource server alike)
-- Returns {'live', auth_level, auth_time, device_id, user_agent, now_ms, username,
--          binding change to report now ('' if none or already reported),
--          absolute expiry (ms), client id ('' for the built-in client),
--          DPoP key thumbprint ('' when unbound)}
--      or {'dpop_replayed'|'dpop_full'} (the proof's jti was seen; nothing changed)
--      or {'revoked'|'expired', reason[, 'now' when this call ended it[, changed]]}
--      or {'unknown'}.
local sid = ARGV[1]
local f = redis.call('HMGET', KEYS[1], session_field(sid), 'n')
if not f[1] then return {'unknown'} end
local s = decode_session(f[1])
local now = now_ms()
local idle, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
if past_retention(s, now, idle, retention) then return {'unknown'} end
local refresh = ARGV[8] or ''
if refresh ~= '' and refresh ~= s.rc and not (refresh == s.rp and now <= s.t) then
  return {'unknown'}
end
if s.st ~= 'live' then return {s.st, s.r} end
local why = expiry_reason(s.a, s.l, idle, now)
if why then
  end_session(KEYS[1], sid, s, 'expired', why, now)
  return {'expired', why, 'now'}
end

-- A bound token without its key, under the revoke policy (P1): nothing else is done.
if ARGV[12] == 'revoke' then
  end_session(KEYS[1], sid, s, 'revoked', 'stolen', now)
  return {'revoked', 'stolen', 'now'}
end

-- Device binding (D3): report or enforce a change, as the refresh script does.
local ended, report = apply_binding(KEYS[1], sid, s, ARGV[4], ARGV[5], ARGV[6], ARGV[7], now)
if ended then return {'revoked', 'binding', 'now', report} end
local dirty = report ~= ''

-- DPoP: the proof's jti is accepted once (RFC 9449 section 11.1).
if KEYS[2] then
  local jti = dpop_jti_fresh(KEYS[2], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11]), now)
  if jti ~= 'fresh' then return {'dpop_' .. jti} end
end

-- Rewrite the idle clock at most once a second: idle limits are minutes, and skipping
-- the write spares the AOF a record on most requests of a busy session.
if now - s.l >= 1000 then
  s.l, dirty = now, true
end
if dirty then save_session(KEYS[1], sid, s) end
return {'live', s.lv, s.at, s.d, s.ua, now, f[2] or '', report, s.a, s.ci, s.jk}
