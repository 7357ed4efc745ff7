-- Drop a user's session records past retention, and all but the most recent ended ones
-- (the sweep, for users who never come back: every other write script prunes too), and
-- count the user's live sessions on the way: the sweep visits every record anyway, so the
-- live-session gauge costs no work of its own (store.py, LIVE_SESSIONS_KEY).
-- KEYS[1] the user's record. ARGV: 1 idle_ms, 2 retention_ms, 3 ended records to keep
-- Returns {records dropped, records left, live sessions}: a session is live if it was not
-- ended and has run out of neither limit at this script's Redis time (the rule
-- verify_touch applies; a record still marked live but past a limit is not counted).
local now, idle_ms = now_ms(), tonumber(ARGV[1])
local sessions, dropped = user_sessions(KEYS[1], now, idle_ms, tonumber(ARGV[2]), true,
  tonumber(ARGV[3]))
local live = 0
for _, s in ipairs(sessions) do
  if s.st == 'live' and not expiry_reason(s.a, s.l, idle_ms, now) then live = live + 1 end
end
return {dropped, #sessions, live}
