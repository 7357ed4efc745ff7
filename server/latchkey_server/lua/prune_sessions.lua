-- Drop a user's session records past retention, and all but the most recent ended ones
-- (the sweep, for users who never come back: every other write script prunes too).
-- KEYS[1] the user's record. ARGV: 1 idle_ms, 2 retention_ms, 3 ended records to keep
-- Returns {records dropped, records left}.
local sessions, dropped = user_sessions(KEYS[1], now_ms(), tonumber(ARGV[1]),
  tonumber(ARGV[2]), true, tonumber(ARGV[3]))
return {dropped, #sessions}
