"""Reach into a session's stored record the way only a test needs to: age it, or lose it.

Records are packed by the store's scripts; these helpers run small scripts with the
store's own prelude, so they use the same codec as the server and no second copy of the
layout exists.
"""

from __future__ import annotations

import redis
from latchkey_resource.scripts import with_prelude
from latchkey_server.store import session_field, user_key

__all__ = ["age_session", "forget_session", "session_state"]

_AGE = with_prelude("""
local s = decode_session(redis.call('HGET', KEYS[1], session_field(ARGV[1])))
s.l = s.l - tonumber(ARGV[2])
save_session(KEYS[1], ARGV[1], s)
return s.l
""")

_STATE = with_prelude("""
local raw = redis.call('HGET', KEYS[1], session_field(ARGV[1]))
if not raw then return false end
local s = decode_session(raw)
return {s.st, s.r}
""")


def age_session(client: redis.Redis, user_id: str, session_id: str, ms: int) -> None:
    """Move a session's last-seen time ``ms`` into the past (its tokens are untouched)."""
    client.eval(_AGE, 1, user_key(user_id), session_id, ms)


def forget_session(client: redis.Redis, user_id: str, session_id: str) -> None:
    """Delete a session's record, as a restore from an old backup would."""
    client.hdel(user_key(user_id), session_field(session_id))


def session_state(client: redis.Redis, user_id: str, session_id: str) -> tuple[str, str] | None:
    """Return a session's stored (state, reason), or None if there is no record."""
    reply = client.eval(_STATE, 1, user_key(user_id), session_id)
    return (reply[0], reply[1]) if reply else None
