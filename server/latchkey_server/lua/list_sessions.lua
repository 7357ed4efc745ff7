-- List a user's live sessions for the session list (L1) and the admin CLI (D5).
-- Read-only: sessions past their idle or absolute limit (server time) are left out, and
-- are marked expired by whichever script next touches them.
-- KEYS[1] the user's record (holds every session of the user).
-- ARGV: 1 idle_ms, 2 retention_ms
-- Returns {now_ms, {sid, created, last seen, absolute expiry, auth level, device name,
--          user agent, ip}, ...}, oldest first.
local idle, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local out = {now}
for _, s in ipairs(user_sessions(KEYS[1], now, idle, retention, false, 0)) do
  if s.st == 'live' and not expiry_reason(s.a, s.l, idle, now) then
    table.insert(out, {s.sid, s.c, s.l, s.a, s.lv, s.dn, s.ua, s.ip})
  end
end
return out
