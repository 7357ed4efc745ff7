"""The least a resource server's Redis user needs, as one ``ACL SETUSER`` rule set.

What the verifier sends, and nothing else:

- ``FCALL`` of the ``verify_touch`` library the token server loads (``scripts.Script``),
  else ``EVALSHA`` (and ``EVAL`` once per node, when the script is not cached there) of
  ``verify_touch.lua``; either calls ``HMGET``, ``HSET`` and ``TIME``: Redis checks a
  script's commands and keys against the caller's ACL (a script has no rights of its own),
  so those are granted too, on the user records only (``%RW~lk:{u:*}:user``). The script
  writes there: the idle touch, an expiry, a binding change. That write is what keeps the
  one round trip; a backend that must not write to the store uses introspection instead
  (docs/RESOURCE_SERVERS.md).
- ``HGETALL`` of the policy the token server publishes, read-only (``%R~lk:{policy}``), and
  of nothing else: a Redis 7 selector grants the one command on the one key.
- ``XADD`` to the security alert stream, and nothing else on it (a selector too; Redis
  treats XADD as a read-write access of its key), on the rare paths that raise an alert.
- ``INCRBY`` (redis-py's INCR) and ``EXPIRE`` of the flood budget's counters
  (``lk:evb:*``, ``event_budget.py``), on the same paths, so one source's alerts are
  budgeted as the token server budgets them.

What that leaves a resource server: ``HMGET``/``HSET`` on the records of users whose ids it
knows (from tokens it sees; it cannot list keys). Fields cannot be told apart by an ACL,
so it could read such a user's password hash (argon2id) or rewrite a session record: it is
trusted with the store like the token server is. A backend that must not be is a case
for introspection (docs/RESOURCE_SERVERS.md).
- ``PING`` (redis-py's health check of an idle connection). redis-py also sends ``CLIENT
  SETINFO`` on connect and ignores a refusal; Redis 7.0 does not know it, and from 7.2 on
  ``+client|setinfo`` may be added to keep it out of ``ACL LOG``.

No ``FUNCTION LOAD``: a library is known by its name, not by a hash of its text as an
``EVALSHA`` script is, so a user allowed to load (``FUNCTION LOAD REPLACE``) could put its
own code under the name the token server calls, and the token server would run it with
its own rights. The token server loads the libraries; a resource server calls the one the
token server loaded (the same version has the same name) and uses ``EVALSHA`` until it
exists. No ``SCRIPT LOAD``, ``KEYS``, ``SCAN``, ``DEL``, ``CONFIG``, ``FLUSH*``, no other key and no
pub/sub channel. ``python -m latchkey_resource.acl <user>`` prints the command to run.
"""

from __future__ import annotations

import sys

from .store_keys import (
    EVENT_BUDGET_KEY_PREFIX,
    POLICY_KEY,
    SECURITY_STREAM_KEY,
    dpop_jti_key,
    user_key,
)

__all__ = ["ACL_RULES", "acl_setuser_command"]

ACL_RULES: tuple[str, ...] = (
    "resetkeys", "resetchannels", "-@all",
    # The session check: the script and what it calls, on user records only.
    "+fcall", "+evalsha", "+eval", "+hmget", "+hset", "+time", "+ping", f"%RW~{user_key('*')}",
    # DPoP: the same script remembers each proof's jti in the user's jti set.
    "+zremrangebyscore", "+zscore", "+zcard", "+zadd", "+pexpire",
    f"%RW~{dpop_jti_key('*')}",
    # Redis 7 selectors: each grants one command on one key, and nothing else.
    f"(+hgetall %R~{POLICY_KEY})",
    f"(+xadd ~{SECURITY_STREAM_KEY})",
    f"(+incrby +expire ~{EVENT_BUDGET_KEY_PREFIX}:*)",  # redis-py INCR sends INCRBY
)


_PLACEHOLDER = "<password>"  # what the operator replaces


def acl_setuser_command(user: str, password: str = _PLACEHOLDER) -> str:
    """Return the ``ACL SETUSER`` line for a resource server's Redis user."""
    return " ".join(["ACL SETUSER", user, "on", f">{password}", *ACL_RULES])


def main(argv: list[str] | None = None) -> int:
    """Print the ``ACL SETUSER`` command for the user named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    print(acl_setuser_command(args[0] if args else "lk-resource"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
