-- Replace a user's password hash, only if it is still the one the caller verified: a
-- compare-and-set, so no write of a hash can undo a password change that committed
-- since the caller read the record (issue 13: a login's rehash put an old password back).
-- KEYS[1] the user's record.
-- ARGV: 1 the hash the caller verified, 2 the new hash, 3 '1' when the credential itself
--       changes (a new password: the credential generation moves on, so every login that
--       verified the old one is refused when it tries to create its session), '0' for a
--       rehash of the same password.
-- Returns 1 if written, 0 if the stored hash is no longer the verified one.
if redis.call('HGET', KEYS[1], 'p') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[2])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'g', 1) end
return 1
