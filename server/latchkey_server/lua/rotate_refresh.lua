-- Rotate a refresh token atomically (L3): the current token yields its successor once;
-- a retry of the previous token inside the grace window gets the same successor back;
-- the previous token after the window is theft and ends the session.
-- KEYS[1] session hash, KEYS[2] the user's session index.
-- ARGV: 1 sid, 2 presented hash, 3 successor hash, 4 presented generation,
--       5 idle_ms, 6 grace_ms, 7 retention_ms
-- Returns {'rotated'|'replayed', ms left to absolute, auth_level, auth_time, device_id,
--          user_agent}, {'ended', state, reason[, 'now']}, {'reused'},
--          {'check', current generation, current hash, previous hash, state, reason},
--          or {'unknown'}.
local f = redis.call('HMGET', KEYS[1], 'st', 'r', 'a', 'l', 'rc', 'rp', 'pg', 'g',
  'lv', 'at', 'd', 'ua')
if not f[1] then return {'unknown'} end
local presented, successor = ARGV[2], ARGV[3]
local generation, current_generation = tonumber(ARGV[4]), tonumber(f[8])
local is_current, is_previous = presented == f[5], presented == f[6]
local retention = tonumber(ARGV[7])

-- 1. An older generation than we can compare directly: the caller checks its lineage.
if not is_current and not is_previous then
  if generation < current_generation then
    return {'check', current_generation, f[5], f[6] or '', f[1], f[2] or ''}
  end
  return {'unknown'}
end

-- 2. An ended session stays ended; its holder learns why.
if f[1] ~= 'live' then return {'ended', f[1], f[2] or ''} end

-- 3. Idle and absolute limits, on server time.
local now = now_ms()
local idle, absolute_at = tonumber(ARGV[5]), tonumber(f[3])
local why = expiry_reason(absolute_at, tonumber(f[4]), idle, now)
if why then
  end_session(KEYS[1], KEYS[2], ARGV[1], 'expired', why, now, retention)
  return {'ended', 'expired', why, 'now'}
end

local ttl = live_ttl_ms(absolute_at, now, idle, retention)
-- 4. The current token: rotate to its successor.
if is_current then
  redis.call('HSET', KEYS[1], 'rp', presented, 'rc', successor,
    'pg', now + tonumber(ARGV[6]), 'g', current_generation + 1, 'l', now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'rotated', absolute_at - now, f[9], f[10], f[11] or '', f[12] or ''}
end

-- 5. The previous token inside the grace window: the same successor again.
if now <= tonumber(f[7]) and successor == f[5] then
  redis.call('HSET', KEYS[1], 'l', now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'replayed', absolute_at - now, f[9], f[10], f[11] or '', f[12] or ''}
end

-- 6. The previous token after the window: someone else holds the chain. End it.
end_session(KEYS[1], KEYS[2], ARGV[1], 'revoked', 'reuse', now, retention)
return {'reused'}
