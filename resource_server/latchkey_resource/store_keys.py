"""Name the shared store's keys a resource server touches: the one place outside the token
server that knows them, and the place the token server's ``store.py`` takes them from.

A user's record (one hash, ``lk:{u:<user id>}:user``) holds each of the user's sessions in a
field ``s:<session id>``; the ``{...}`` hash tag keeps a user's record in one cluster slot,
so the session check is one script on one node. ``POLICY_KEY`` is what the token server
publishes of its session policy (``policy.py``), and ``SECURITY_STREAM_KEY`` the stream of
security alerts both write to; ``event_budget_key`` names the counters of the flood budget
both keep (``event_budget.py``).
"""

from __future__ import annotations

__all__ = [
    "EVENT_BUDGET_KEY_PREFIX",
    "KEY_PREFIX",
    "POLICY_KEY",
    "SECURITY_STREAM_KEY",
    "SESSION_FIELD_PREFIX",
    "dpop_jti_key",
    "event_budget_key",
    "session_field",
    "user_key",
    "user_tag",
]

KEY_PREFIX = "lk"
# A session's field in its user's record (lua/_prelude.lua builds the same name).
SESSION_FIELD_PREFIX = "s:"
# The session policy the token server publishes at start (its own slot: read once a few
# seconds by each resource server process, never per request).
POLICY_KEY = f"{KEY_PREFIX}:{{policy}}"
# The alerts a security team consumes (only a genuine token or an operator can raise one).
SECURITY_STREAM_KEY = f"{KEY_PREFIX}:security-events"
# Per-source counters of the event budget (event_budget.py), one per event, source and window.
EVENT_BUDGET_KEY_PREFIX = f"{KEY_PREFIX}:evb"


def user_tag(user_id: str) -> str:
    """Return the prefix, hash tag included, of every key in a user's cluster slot."""
    return f"{KEY_PREFIX}:{{u:{user_id}}}"


# The name this module used before ``user_tag`` was public; branches written against it
# (i17-server's ``dpop_jti_key``) keep working when merged.
_user_tag = user_tag


def user_key(user_id: str) -> str:
    """Return the key of a user's record (the user and all of their sessions)."""
    return f"{user_tag(user_id)}:user"


def session_field(session_id: str) -> str:
    """Return the field of a user's record that holds one session (packed by scripts)."""
    return SESSION_FIELD_PREFIX + session_id


def dpop_jti_key(user_id: str) -> str:
    """Return the key of the user's remembered DPoP proof ``jti``s (RFC 9449 section 11.1):
    in the user's slot, shared by the token server and every resource server, so a proof
    is accepted once wherever it is sent."""
    return f"{_user_tag(user_id)}:dpop-jti"


def event_budget_key(name: str) -> str:
    """Return the key of one budget counter (``<event>:<source>:<window>``), in a slot of its
    own: each is a single-key INCR and EXPIRE."""
    return f"{EVENT_BUDGET_KEY_PREFIX}:{{{name}}}"
