-- End one session, marking why (L1). With a refresh hash, end it only if the hash is the
-- session's current or previous refresh token (logout by refresh token).
-- KEYS[1] the user's record (holds the session).
-- ARGV: 1 sid, 2 reason, 3 retention_ms, 4 refresh hash or '', 5 idle_ms,
--       6 optional: the OAuth client asking (RFC 7009: only the client a token was
--         issued to may revoke it; '' for the built-in client; absent: anyone)
-- Returns 'revoked', 'ended' (already over), 'wrong_client' (nothing changed) or 'unknown'.
local sid = ARGV[1]
local now = now_ms()
local s = load_session(KEYS[1], sid, now, tonumber(ARGV[5]), tonumber(ARGV[3]))
if not s then return 'unknown' end
if ARGV[4] ~= '' and ARGV[4] ~= s.rc and (s.rp == '' or ARGV[4] ~= s.rp) then
  return 'unknown'
end
if ARGV[6] and ARGV[6] ~= s.ci then return 'wrong_client' end
if s.st ~= 'live' then return 'ended' end
end_session(KEYS[1], sid, s, 'revoked', ARGV[2], now)
return 'revoked'
