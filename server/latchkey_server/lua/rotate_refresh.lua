-- Rotate a refresh token atomically (L3): the current token yields its successor once;
-- a retry of the previous token inside the grace window gets the same successor back;
-- the previous token after the window is theft and ends the session.
-- KEYS[1] the user's record (holds the session).
-- ARGV: 1 sid, 2 presented hash, 3 successor hash, 4 presented generation,
--       5 idle_ms, 6 grace_ms, 7 retention_ms
-- Returns {'rotated'|'replayed', ms left to absolute, auth_level, auth_time, device_id,
--          user_agent}, {'ended', state, reason[, 'now']}, {'reused'},
--          {'check', current generation, current hash, previous hash, state, reason},
--          or {'unknown'}.
local sid = ARGV[1]
local now = now_ms()
local idle, retention = tonumber(ARGV[5]), tonumber(ARGV[7])
local s = load_session(KEYS[1], sid, now, idle, retention)
if not s then return {'unknown'} end
local presented, successor = ARGV[2], ARGV[3]
local generation = tonumber(ARGV[4])
local is_current, is_previous = presented == s.rc, s.rp ~= '' and presented == s.rp

-- 1. An older generation than we can compare directly: the caller checks its lineage.
if not is_current and not is_previous then
  if generation < s.g then
    return {'check', s.g, s.rc, s.rp, s.st, s.r}
  end
  return {'unknown'}
end

-- 2. An ended session stays ended; its holder learns why.
if s.st ~= 'live' then return {'ended', s.st, s.r} end

-- 3. Idle and absolute limits, on server time.
local why = expiry_reason(s.a, s.l, idle, now)
if why then
  end_session(KEYS[1], sid, s, 'expired', why, now)
  return {'ended', 'expired', why, 'now'}
end

-- 4. The current token: rotate to its successor.
if is_current then
  s.rp, s.rc, s.t, s.g, s.l = presented, successor, now + tonumber(ARGV[6]), s.g + 1, now
  save_session(KEYS[1], sid, s)
  return {'rotated', s.a - now, s.lv, s.at, s.d, s.ua}
end

-- 5. The previous token inside the grace window: the same successor again.
if now <= s.t and successor == s.rc then
  s.l = now
  save_session(KEYS[1], sid, s)
  return {'replayed', s.a - now, s.lv, s.at, s.d, s.ua}
end

-- 6. The previous token after the window: someone else holds the chain. End it.
end_session(KEYS[1], sid, s, 'revoked', 'reuse', now)
return {'reused'}
