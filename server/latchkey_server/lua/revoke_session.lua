-- End one session, marking why (L1). With a refresh hash, end it only if the hash is the
-- session's current or previous refresh token (logout by refresh token).
-- KEYS[1] session hash, KEYS[2] the user's session index.
-- ARGV: 1 sid, 2 reason, 3 retention_ms, 4 refresh hash or ''
-- Returns 'revoked', 'ended' (already over) or 'unknown'.
local f = redis.call('HMGET', KEYS[1], 'st', 'rc', 'rp')
if not f[1] then return 'unknown' end
if ARGV[4] ~= '' and ARGV[4] ~= f[2] and ARGV[4] ~= f[3] then return 'unknown' end
if f[1] ~= 'live' then return 'ended' end
end_session(KEYS[1], KEYS[2], ARGV[1], 'revoked', ARGV[2], now_ms(), tonumber(ARGV[3]))
return 'revoked'
