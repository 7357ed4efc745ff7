-- Shared helpers, prepended to every Latchkey script by store.py (Redis 6.2 has no
-- FUNCTION libraries). Time always comes from the Redis server, never from a client.
redis.replicate_commands()

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The reason a session has expired at `now`, or nil while it is usable.
local function expiry_reason(absolute_at_ms, last_seen_ms, idle_ms, now)
  if now >= absolute_at_ms then return 'absolute' end
  if now - last_seen_ms >= idle_ms then return 'idle' end
  return nil
end

-- How long a live session's record must stay: until it could expire, plus retention.
local function live_ttl_ms(absolute_at_ms, now, idle_ms, retention_ms)
  return math.min(absolute_at_ms, now + idle_ms) - now + retention_ms
end

-- End a session: mark it (never delete it, so replays of its tokens are recognised),
-- drop it from the user's index, and keep the record for the retention period.
local function end_session(session_key, index_key, sid, state, reason, now, retention_ms)
  redis.call('HSET', session_key, 'st', state, 'r', reason, 'e', now)
  redis.call('ZREM', index_key, sid)
  redis.call('PEXPIRE', session_key, retention_ms)
end
