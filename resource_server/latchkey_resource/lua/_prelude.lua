-- Shared helpers, prepended to every Latchkey script by store.py (Redis 6.2 has no
-- FUNCTION libraries). Time always comes from the Redis server, never from a client.
redis.replicate_commands()

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A session is one field of its user's record hash, 's:' .. session id, holding the
-- record packed with the struct library: a fixed part (state, auth level, refresh
-- generation, then created, last seen, absolute expiry and one more time in ms on Redis
-- server time, and the auth time in s), then length-prefixed strings. The extra time is
-- the end of the previous refresh token's grace window while the session is live, and
-- the moment it ended once it has ended. store.py documents the layout and owns the
-- field name; nothing outside these scripts reads a packed record.
local SESSION_FIELD_PREFIX = 's:'
local SESSION_FIXED = '>BBI4I6I6I6I6I4'
-- The strings, in record order, each with the struct code of its length prefix. A
-- client-supplied string (device id and name, user agent, address) gets two bytes: it may
-- be up to 128 or 256 characters of UTF-8. struct wraps a length that does not fit its
-- prefix, which would corrupt the record, so encode_session refuses one instead.
-- The last two are optional: 'ci', the OAuth client the session was issued to ('' for
-- the built-in client of /v1 logins, so the common case costs one byte), then 'jk', the
-- RFC 7638 thumbprint of the DPoP key the session is bound to ('' when unbound). Records
-- written before one existed lack it (and what follows) and decode with it as ''.
local SESSION_STRINGS = {{'rc', 'B'}, {'rp', 'B'}, {'d', 'H'}, {'dn', 'H'}, {'ua', 'H'},
  {'ip', 'H'}, {'bx', 'B'}, {'r', 'B'}, {'ci', 'B'}, {'jk', 'B'}}
local OPTIONAL_STRINGS = 2
local LENGTH_LIMITS = {B = 255, H = 65535}
-- SESSION_FORMATS[k]: the fixed part and the first k strings.
local SESSION_FORMATS = {}
local SESSION_FORMAT = SESSION_FIXED
for i, string_field in ipairs(SESSION_STRINGS) do
  SESSION_FORMAT = SESSION_FORMAT .. string_field[2] .. 'c0'
  SESSION_FORMATS[i] = SESSION_FORMAT
end
local STATE_NAMES = {'live', 'revoked', 'expired'}
local STATE_CODES = {live = 1, revoked = 2, expired = 3}
local LEVEL_NAMES = {[0] = 'normal', [1] = 'elevated'}
local LEVEL_CODES = {normal = 0, elevated = 1}

local function session_field(sid)
  return SESSION_FIELD_PREFIX .. sid
end

local function decode_session(raw)
  local n = #SESSION_STRINGS
  local ok, v = pcall(function() return {struct.unpack(SESSION_FORMAT, raw)} end)
  while not ok and n > #SESSION_STRINGS - OPTIONAL_STRINGS do
    n = n - 1
    ok, v = pcall(function() return {struct.unpack(SESSION_FORMATS[n], raw)} end)
  end
  if not ok then error(v) end
  local s = {st = STATE_NAMES[v[1]], lv = LEVEL_NAMES[v[2]], g = v[3], c = v[4], l = v[5],
    a = v[6], t = v[7], at = v[8]}
  for i, string_field in ipairs(SESSION_STRINGS) do
    s[string_field[1]] = i <= n and v[8 + i] or ''
  end
  return s
end

local function encode_session(s)
  local v = {STATE_CODES[s.st], LEVEL_CODES[s.lv], s.g, s.c, s.l, s.a, s.t, s.at}
  for _, string_field in ipairs(SESSION_STRINGS) do
    local name, code = string_field[1], string_field[2]
    local value = s[name]
    if #value > LENGTH_LIMITS[code] then
      error('session field ' .. name .. ' is too long to store')
    end
    table.insert(v, #value)
    table.insert(v, value)
  end
  return struct.pack(SESSION_FORMAT, unpack(v))
end

local function save_session(user_key, sid, s)
  redis.call('HSET', user_key, session_field(sid), encode_session(s))
end

-- The reason a session has expired at `now`, or nil while it is usable.
local function expiry_reason(absolute_at_ms, last_seen_ms, idle_ms, now)
  if now >= absolute_at_ms then return 'absolute' end
  if now - last_seen_ms >= idle_ms then return 'idle' end
  return nil
end

-- When a session stopped being usable: when it was ended, or when it expired (or will).
local function over_at_ms(s, idle_ms)
  if s.st ~= 'live' then return s.t end
  return math.min(s.a, s.l + idle_ms)
end

-- A record is kept for the retention period after its session is over, so that a replay
-- of one of its tokens is answered with the reason; after that it is as good as gone.
local function past_retention(s, now, idle_ms, retention_ms)
  return now >= over_at_ms(s, idle_ms) + retention_ms
end

-- Read one session; nil if there is none or its record is past retention.
local function load_session(user_key, sid, now, idle_ms, retention_ms)
  local raw = redis.call('HGET', user_key, session_field(sid))
  if not raw then return nil end
  local s = decode_session(raw)
  if past_retention(s, now, idle_ms, retention_ms) then return nil end
  return s
end

-- End a session: mark it with its state and reason (never delete it at once, so replays
-- of its tokens are recognised until retention runs out). What only a live session needs
-- (device, user agent, address: shown in session lists, compared for binding) is dropped,
-- so a retained record keeps just its state, times and refresh hashes.
local function end_session(user_key, sid, s, state, reason, now)
  s.st, s.r, s.t = state, reason, now
  s.d, s.dn, s.ua, s.ip, s.bx, s.jk = '', '', '', '', '', ''
  save_session(user_key, sid, s)
end

-- All of a user's sessions still within retention, oldest first, each with its `sid`,
-- and how many records were pruned. With `prune`, records past retention are deleted,
-- and of the ended ones only the `keep_ended` most recent are kept (a replay of a token
-- of an older one is then refused as unknown rather than with its reason).
local function user_sessions(user_key, now, idle_ms, retention_ms, prune, keep_ended)
  local all = redis.call('HGETALL', user_key)
  local sessions, ended, drop = {}, {}, {}
  for i = 1, #all, 2 do
    local name = all[i]
    if string.sub(name, 1, #SESSION_FIELD_PREFIX) == SESSION_FIELD_PREFIX then
      local s = decode_session(all[i + 1])
      if past_retention(s, now, idle_ms, retention_ms) then
        table.insert(drop, name)
      else
        s.sid = string.sub(name, #SESSION_FIELD_PREFIX + 1)
        table.insert(sessions, s)
        if s.st ~= 'live' then table.insert(ended, s) end
      end
    end
  end
  if prune and #ended > keep_ended then
    table.sort(ended, function(x, y) return x.t < y.t end)
    local gone = {}
    for i = 1, #ended - keep_ended do
      gone[ended[i].sid] = true
      table.insert(drop, session_field(ended[i].sid))
    end
    local kept = {}
    for _, s in ipairs(sessions) do
      if not gone[s.sid] then table.insert(kept, s) end
    end
    sessions = kept
  end
  if not prune then drop = {} end
  if #drop > 0 then redis.call('HDEL', user_key, unpack(drop)) end
  table.sort(sessions, function(x, y)
    if x.c ~= y.c then return x.c < y.c end
    return x.sid < y.sid
  end)
  return sessions, #drop
end

-- Device binding (D3), applied the same way by every script that accepts a token for a
-- live session (verify_touch for protected requests, rotate_refresh for refreshes).
-- Compares the request's device id and user agent with the ones `s` was issued to:
-- - 'off', or nothing changed: returns false, ''.
-- - 'enforce' and a change: ends the session (reason 'binding') and returns true and the
--   changed fields, so the caller answers revoked.
-- - 'report' and a change: returns false and the changed fields the first time this
--   fingerprint of the two values is seen for the session ('' after that, so a moved
--   phone raises one event, not one per request); it sets s.bx, and the caller saves s.
-- Changed fields are 'device_id' and/or 'user_agent', comma-separated: which ones, never
-- the values.
local function apply_binding(user_key, sid, s, policy, device_id, user_agent, fingerprint, now)
  if policy == 'off' then return false, '' end
  local changed = {}
  if device_id ~= s.d then table.insert(changed, 'device_id') end
  if user_agent ~= s.ua then table.insert(changed, 'user_agent') end
  if #changed == 0 then return false, '' end
  if policy == 'enforce' then
    end_session(user_key, sid, s, 'revoked', 'binding', now)
    return true, table.concat(changed, ',')
  end
  if s.bx == fingerprint then return false, '' end
  s.bx = fingerprint
  return false, table.concat(changed, ',')
end

-- DPoP (RFC 9449 section 11.1): accept a proof's jti once. Every jti of a user is a
-- member of one sorted set in the user's slot (`jti_key`, store.py names it), scored
-- with when it may be forgotten: its proof's iat window has passed by then, so a replay
-- would be refused for its iat anyway. Forgotten ones are dropped first; at most
-- `limit` are held (only the key holder can make proofs, so only they can fill it).
-- Returns 'fresh' (now remembered), 'replayed' or 'full'; nothing is written unless
-- fresh. Called by the one script each path runs (verify_touch, rotate_refresh,
-- create_session): no extra round trip.
local function dpop_jti_fresh(jti_key, jti, ttl_ms, limit, now)
  redis.call('ZREMRANGEBYSCORE', jti_key, '-inf', now)
  if redis.call('ZSCORE', jti_key, jti) then return 'replayed' end
  if redis.call('ZCARD', jti_key) >= limit then return 'full' end
  redis.call('ZADD', jti_key, now + ttl_ms, jti)
  redis.call('PEXPIRE', jti_key, ttl_ms)
  return 'fresh'
end
