-- Remember that a binding change (D3) was reported for a live session, so one changed
-- device or user agent raises one security event, not one per request.
-- KEYS[1] session hash. ARGV: 1 fingerprint of the request's device id and user agent.
-- Returns 1 when this fingerprint is new for the session (report it), else 0.
local f = redis.call('HMGET', KEYS[1], 'st', 'bx')
if f[1] ~= 'live' or f[2] == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'bx', ARGV[1])
return 1
