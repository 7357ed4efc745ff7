-- Record the live-session total a sweep counted, stamped with this script's Redis time
-- (the clock every other script judges sessions by), for /metrics (observability.py).
-- KEYS[1] LIVE_SESSIONS_KEY. ARGV: 1 the total
-- Returns the timestamp written (ms, Redis server time).
local now = now_ms()
redis.call('HSET', KEYS[1], 'n', tonumber(ARGV[1]), 't', now)
return now
