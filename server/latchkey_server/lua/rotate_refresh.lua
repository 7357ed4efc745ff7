-- Rotate a refresh token atomically (L3): the current token yields its successor once;
-- a retry of the previous token inside the grace window gets the same successor back;
-- the previous token after the window is theft and ends the session. Both answers that
-- hand out a successor apply the device-binding policy (D3) first, exactly as a
-- protected request does (apply_binding in the prelude): one round trip in every policy.
-- With DPoP, the retry must come with the key the session holds now (none if unbound),
-- else it is reuse like the previous token after the window; only the current token
-- binds an unbound session (docs/API-NOTES.md "DPoP").
-- KEYS[1] the user's record (holds the session); KEYS[2] (optional) the user's DPoP jti
-- set, when the request carries a proof.
-- ARGV: 1 sid, 2 presented hash, 3 successor hash, 4 presented generation, or -1 when
--       its MAC does not check (not minted by this server, or minted before the MAC:
--       compared with the current and previous hashes, never answered 'check'),
--       5 idle_ms, 6 grace_ms, 7 retention_ms, 8 binding policy (off|report|enforce),
--       9 the request's device id, 10 its user agent, 11 their fingerprint,
--       12 the OAuth client presenting it ('' for the built-in one),
--       13 DPoP: 'check' (compare the proof's key with the session's) or 'off' (ignore),
--       14 the proof's key thumbprint ('' without a proof), 15 what a bound session's
--       token presented without its key does: 'report' (nothing) or 'revoke' (ends it,
--       reason 'stolen'), 16 the proof's jti (with KEYS[2]), 17 how long to remember it
--       (ms), 18 how many a user's set may hold
-- Returns {'rotated'|'replayed', ms left to absolute, auth_level, auth_time,
--          binding change to report now ('' if none or already reported),
--          DPoP key thumbprint the session is bound to ('' if none)},
--         {'dpop_stolen', 'no_proof'|'other_key'[, 'now' when the policy ended it]},
--         {'dpop_replayed'|'dpop_full'} (the proof's jti was seen; nothing changed),
--         {'ended', state, reason[, 'now' when this call ended it[, changed]]},
--         {'reused'}, {'check', current generation, current hash, previous hash, state,
--         reason}, {'wrong_client'} (nothing changed), or {'unknown'}.
local sid = ARGV[1]
local now = now_ms()
local idle, retention = tonumber(ARGV[5]), tonumber(ARGV[7])
local s = load_session(KEYS[1], sid, now, idle, retention)
if not s then return {'unknown'} end
-- 0. A refresh token is bound to the client it was issued to (RFC 6749 section 6):
-- another client's attempt changes nothing, not even reuse detection.
if s.ci ~= ARGV[12] then return {'wrong_client'} end
local presented, successor = ARGV[2], ARGV[3]
local generation = tonumber(ARGV[4])
local is_current, is_previous = presented == s.rc, s.rp ~= '' and presented == s.rp

-- 1. An older generation than we can compare directly: the caller checks its lineage.
if not is_current and not is_previous then
  if generation >= 0 and generation < s.g then
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

-- 4. The current token, or the previous one inside the grace window (a retry whose
-- answer was lost): the device binding first, as for a protected request.
local is_retry = not is_current and now <= s.t and successor == s.rc
if is_current or is_retry then
  -- DPoP (RFC 9449 section 5). A retry of the previous token is answered only to the
  -- holder who made the rotation: the same key the session holds now, or none while it
  -- is unbound. Another key (or none) means two holders of one chain inside the grace
  -- window, whatever either proves: reuse, and the session ends (so a thief who
  -- refreshed a stolen unbound token first, binding it to their key, loses it at the
  -- victim's retry instead of keeping it). The current token of a bound session proves
  -- its key; only the current token binds an unbound one. Nothing rotates without it.
  if ARGV[13] == 'check' then
    local jkt = ARGV[14]
    if is_retry and jkt ~= s.jk then
      end_session(KEYS[1], sid, s, 'revoked', 'reuse', now)
      return {'reused'}
    end
    if s.jk ~= '' and jkt ~= s.jk then
      local missing = 'other_key'
      if jkt == '' then missing = 'no_proof' end
      if ARGV[15] == 'revoke' then
        end_session(KEYS[1], sid, s, 'revoked', 'stolen', now)
        return {'dpop_stolen', missing, 'now'}
      end
      return {'dpop_stolen', missing}
    end
    if KEYS[2] then
      local jti = dpop_jti_fresh(KEYS[2], ARGV[16], tonumber(ARGV[17]), tonumber(ARGV[18]),
        now)
      if jti ~= 'fresh' then return {'dpop_' .. jti} end
    end
    if is_current and s.jk == '' then s.jk = jkt end
  end
  local ended, report = apply_binding(KEYS[1], sid, s, ARGV[8], ARGV[9], ARGV[10], ARGV[11],
    now)
  if ended then return {'ended', 'revoked', 'binding', 'now', report} end
  -- 5. The current token rotates to its successor; the retry gets the same one again.
  if is_current then
    s.rp, s.rc, s.t, s.g = presented, successor, now + tonumber(ARGV[6]), s.g + 1
  end
  s.l = now
  save_session(KEYS[1], sid, s)
  if is_current then return {'rotated', s.a - now, s.lv, s.at, report, s.jk} end
  return {'replayed', s.a - now, s.lv, s.at, report, s.jk}
end

-- 6. The previous token after the window: someone else holds the chain. End it.
end_session(KEYS[1], sid, s, 'revoked', 'reuse', now)
return {'reused'}
