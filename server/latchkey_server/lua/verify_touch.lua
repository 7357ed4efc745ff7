-- Verify a session for a protected request, apply the device-binding policy (D3) and
-- touch its idle clock: all in one round trip, atomically.
-- KEYS[1] session hash, KEYS[2] the user's session index, KEYS[3] the user's record
-- (read for the username, so a profile view needs no second round trip).
-- ARGV: 1 sid, 2 idle_ms, 3 retention_ms, 4 binding policy (off|report|enforce),
--       5 the request's device id, 6 its user agent, 7 their fingerprint
-- Returns {'live', auth_level, auth_time, device_id, user_agent, now_ms, username,
--          binding change to report now ('' if none or already reported)}
--      or {'revoked'|'expired', reason[, 'now' when this call ended it[, changed]]}
--      or {'unknown'}.
local f = redis.call('HMGET', KEYS[1], 'st', 'r', 'a', 'l', 'lv', 'at', 'd', 'ua', 'bx')
if not f[1] then return {'unknown'} end
if f[1] ~= 'live' then return {f[1], f[2] or ''} end
local now = now_ms()
local idle, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
local absolute_at = tonumber(f[3])
local why = expiry_reason(absolute_at, tonumber(f[4]), idle, now)
if why then
  end_session(KEYS[1], KEYS[2], ARGV[1], 'expired', why, now, retention)
  return {'expired', why, 'now'}
end

-- Device binding: which of the bound device id and user agent changed, if any.
local changed = {}
if ARGV[4] ~= 'off' then
  if ARGV[5] ~= (f[7] or '') then table.insert(changed, 'device_id') end
  if ARGV[6] ~= (f[8] or '') then table.insert(changed, 'user_agent') end
end
local report = ''
if #changed > 0 then
  if ARGV[4] == 'enforce' then
    end_session(KEYS[1], KEYS[2], ARGV[1], 'revoked', 'binding', now, retention)
    return {'revoked', 'binding', 'now', table.concat(changed, ',')}
  end
  -- Report each new (device id, user agent) once per session, not once per request.
  if f[9] ~= ARGV[7] then
    redis.call('HSET', KEYS[1], 'bx', ARGV[7])
    report = table.concat(changed, ',')
  end
end

-- Rewrite the idle clock at most once a second: idle limits are minutes, and skipping
-- the write spares the AOF a record on most requests of a busy session.
if now - tonumber(f[4]) >= 1000 then
  redis.call('HSET', KEYS[1], 'l', now)
  redis.call('PEXPIRE', KEYS[1], live_ttl_ms(absolute_at, now, idle, retention))
end
return {'live', f[5], f[6], f[7] or '', f[8] or '', now,
  redis.call('HGET', KEYS[3], 'n') or '', report}
