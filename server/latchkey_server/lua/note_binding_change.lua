-- Remember that a binding change (D3) was reported for a live session, so one changed
-- device or user agent raises one security event, not one per request.
-- KEYS[1] the user's record (holds the session).
-- ARGV: 1 sid, 2 fingerprint of the request's device id and user agent.
-- Returns 1 when this fingerprint is new for the session (report it), else 0.
local raw = redis.call('HGET', KEYS[1], session_field(ARGV[1]))
if not raw then return 0 end
local s = decode_session(raw)
if s.st ~= 'live' or s.bx == ARGV[2] then return 0 end
s.bx = ARGV[2]
save_session(KEYS[1], ARGV[1], s)
return 1
