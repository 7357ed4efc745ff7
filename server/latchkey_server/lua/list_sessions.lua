-- List a user's live sessions for the session list (L1) and the admin CLI (D5).
-- Read-only: sessions past their idle or absolute limit (server time) are left out, and
-- are marked expired by whichever script next touches them.
-- KEYS[1] the user's session index; session hashes are built from ARGV[1] (same slot).
-- ARGV: 1 session key prefix, 2 idle_ms
-- Returns {now_ms, {sid, created, last seen, absolute expiry, auth level, device name,
--          user agent, ip}, ...}, oldest first.
local prefix, idle = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {now}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', prefix .. sid, 'st', 'c', 'l', 'a', 'lv', 'dn', 'ua', 'ip')
  if f[1] == 'live' and not expiry_reason(tonumber(f[4]), tonumber(f[3]), idle, now) then
    table.insert(out, {sid, f[2], f[3], f[4], f[5] or '', f[6] or '', f[7] or '', f[8] or ''})
  end
end
return out
