-- Create a session for a user, enforcing the concurrency policy, in one atomic step.
-- Optionally replace one session (step-up, password change) and end all others
-- (password change), so no moment exists where both old and new are live.
-- With a new password hash (password change), store it in the same step, but only if the
-- user's hash is still the one the caller verified (a concurrent change wins, not both),
-- and move the credential generation on. A login passes the generation it read with the
-- hash it verified: if a password change, logout-all or admin revoke-all moved it on
-- since, the login is refused (L4: nothing authorised by an old credential outlives its
-- change). A login's rehash (new argon2 parameters) is a compare-and-set against the
-- verified hash, so it can never put an old password back.
-- Records past retention are pruned on the way.
-- KEYS[1] the user's record (holds the password hash and every session of the user);
-- KEYS[2] (optional) the user's DPoP jti set, when the request carries a proof.
-- ARGV[1] one JSON object (store.py builds it; decoded with cjson), with the fields:
--   sid                  the new session's id
--   absolute_ttl_ms      its absolute lifetime
--   idle_ms, retention_ms  the idle limit; how long ended records are kept
--   max_sessions         live sessions a user may hold (the oldest are evicted)
--   single_session       true: every other session is evicted
--   keep_ended           ended records to keep per user
--   refresh_hash, auth_level ('normal'|'elevated'), auth_time (s)
--   device_id, device_name ('' keeps the replaced session's), user_agent, ip
--   client_id            the OAuth client it is issued to ('' for the built-in one)
--   replaces             a session to replace (step-up, password change), or ''
--   replaced_reason      the reason it ends with
--   end_others_reason    a reason to end every other session (password change), or ''
--   new_password_hash    a new password hash to store, or ''
--   verified_password_hash  the hash the caller verified (the change needs it unchanged)
--   verified_generation  the credential generation read with that hash ('' = unchecked)
--   rehashed_password_hash  the verified password hashed anew, stored only if the hash
--                        is still the verified one, or ''
--   known_device         a login's device pseudonym, recorded as 'd:' .. it (a device
--                        that has signed in: its own failure budget, D2), or ''
--   dpop_jkt             the DPoP key thumbprint the session is bound to, or ''
--   dpop_jti             the proof's jti (with KEYS[2]): accepted once, remembered for
--                        dpop_jti_ttl_ms, at most dpop_jti_limit per user
-- Returns {created_at_ms, {ended sid, reason, ...}}; or, with nothing changed,
-- {-1, {}} when the password hash or the credential generation is no longer the
-- verified one, and
-- {-2, {state, reason}} when the session to replace is no longer live (it was signed out
-- remotely, or expired, after the caller's request was authenticated: that wins), and
-- {-3, {'replayed'|'full'}} when the DPoP proof's jti was seen already.
local req = cjson.decode(ARGV[1])
local sid, abs_ttl, idle = req.sid, req.absolute_ttl_ms, req.idle_ms
local retention, max_sessions = req.retention_ms, req.max_sessions
local now = now_ms()
if req.replaces ~= '' then
  local replaced = load_session(KEYS[1], req.replaces, now, idle, retention)
  if not replaced then return {-2, {'unknown', ''}} end
  if replaced.st ~= 'live' then return {-2, {replaced.st, replaced.r}} end
  local why = expiry_reason(replaced.a, replaced.l, idle, now)
  if why then return {-2, {'expired', why}} end
end
if KEYS[2] then
  local jti = dpop_jti_fresh(KEYS[2], req.dpop_jti, req.dpop_jti_ttl_ms, req.dpop_jti_limit,
    now)
  if jti ~= 'fresh' then return {-3, {jti}} end
end
if req.verified_generation ~= '' and
    (redis.call('HGET', KEYS[1], 'g') or '0') ~= req.verified_generation then
  return {-1, {}}
end
if req.new_password_hash ~= '' then
  if redis.call('HGET', KEYS[1], 'p') ~= req.verified_password_hash then return {-1, {}} end
  redis.call('HSET', KEYS[1], 'p', req.new_password_hash)
  redis.call('HINCRBY', KEYS[1], 'g', 1)
elseif req.rehashed_password_hash ~= '' and
    redis.call('HGET', KEYS[1], 'p') == req.verified_password_hash then
  redis.call('HSET', KEYS[1], 'p', req.rehashed_password_hash)
end
if req.known_device ~= '' then redis.call('HSET', KEYS[1], 'd:' .. req.known_device, now) end
local ended = {}
local device_name = req.device_name

local function finish(s, state, reason)
  end_session(KEYS[1], s.sid, s, state, reason, now)
  table.insert(ended, s.sid)
  table.insert(ended, reason)
end

-- Walk the user's sessions oldest first: end expired and replaced ones.
local live = {}
for _, s in ipairs(user_sessions(KEYS[1], now, idle, retention, true, req.keep_ended)) do
  if s.st == 'live' then
    local why = expiry_reason(s.a, s.l, idle, now)
    if why then
      finish(s, 'expired', why)
    elseif s.sid == req.replaces then
      if device_name == '' then device_name = s.dn end
      finish(s, 'revoked', req.replaced_reason)
    elseif req.end_others_reason ~= '' then
      finish(s, 'revoked', req.end_others_reason)
    else
      table.insert(live, s)
    end
  end
end

local keep = max_sessions - 1
if req.single_session then keep = 0 end
for i = 1, #live - keep do
  finish(live[i], 'revoked', 'evicted')
end

save_session(KEYS[1], sid, {st = 'live', lv = req.auth_level, g = 0, c = now, l = now,
  a = now + abs_ttl, t = 0, at = req.auth_time, rc = req.refresh_hash, rp = '',
  d = req.device_id, dn = device_name, ua = req.user_agent, ip = req.ip, bx = '', r = '',
  ci = req.client_id, jk = req.dpop_jkt})
return {now, ended}
