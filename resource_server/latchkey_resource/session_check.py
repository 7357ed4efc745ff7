"""Build the one session check's arguments and decode its reply: shared by every verifier.

``lua/verify_touch.lua`` checks a session is live on Redis server time, applies the
device-binding policy and touches the idle clock, atomically, in one round trip. The token
server (``latchkey_server.store.SessionStore.verify_touch``) and every resource server
(``verifier.py``) build its KEYS/ARGV here and decode its reply here, so they cannot drift
apart: a change to the script's interface is a change to this module and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .store_keys import dpop_jti_key, user_key

__all__ = [
    "BINDING_POLICIES",
    "EXPIRY_REASONS",
    "SessionCheck",
    "SessionState",
    "verify_touch_call",
]

BINDING_POLICIES = ("off", "report", "enforce")
# A session's end reasons that mean it expired rather than was ended by someone.
EXPIRY_REASONS = frozenset({"idle", "absolute"})


class SessionState(StrEnum):
    """Where a session stands, as a script found it (``unknown``: no record of it)."""

    LIVE = "live"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


# A reply's state word to its member without the enum call's cost: every protected
# request decodes one.
_STATES = {state.value: state for state in SessionState}
# The replies of a refused DPoP jti (``dpop_jti_fresh`` in the prelude).
_PROOF_REFUSALS = {"dpop_replayed": "replayed", "dpop_full": "full"}


def verify_touch_call(user_id: str, session_id: str, *, idle_ms: int, retention_ms: int,
                      binding_policy: str, device_id: str = "", user_agent: str = "",
                      binding_fingerprint: str = "", refresh_hash: str = "",
                      dpop_jti: str = "", dpop_jti_ttl_ms: int = 0, dpop_jti_limit: int = 0,
                      dpop_stolen_revoke: bool = False) -> tuple[list[str], list[Any]]:
    """Return the KEYS and ARGV of ``verify_touch.lua`` for one session (its header lists
    them): the user's record, then the session id, the policy and the request's binding
    inputs. ``refresh_hash`` is for introspection of a refresh token only; ``dpop_jti``
    (with how long to remember it and how many a user may hold) for a DPoP proof, accepted
    once in the same script. ``dpop_stolen_revoke``: the request carried a DPoP-bound
    token without its key and the policy ends such a session (reason ``stolen``)."""
    keys = [user_key(user_id)]
    args: list[Any] = [session_id, idle_ms, retention_ms, binding_policy, device_id,
                       user_agent, binding_fingerprint, refresh_hash]
    if dpop_jti:
        keys.append(dpop_jti_key(user_id))
        args += [dpop_jti, dpop_jti_ttl_ms, dpop_jti_limit]
    if dpop_stolen_revoke:
        if not dpop_jti:
            args += ["", 0, 0]
        args.append("revoke")
    return keys, args


@dataclass(frozen=True)
class SessionCheck:
    """What ``verify_touch.lua`` learned about a session."""

    state: SessionState
    reason: str = ""
    auth_level: str = ""
    auth_time: int = 0
    device_id: str = ""
    user_agent: str = ""
    username: str = ""
    just_ended: bool = False
    # Which bound fields (device_id, user_agent) this request changed: to report now
    # (live session, first time seen) or why enforcement just ended it.
    binding_changed: str = ""
    absolute_ms: int = 0  # a live session's absolute end, Redis time
    client_id: str = ""  # as stored: '' for the built-in client
    jkt: str = ""  # the DPoP key thumbprint the session is bound to ('' when unbound)
    # 'replayed' or 'full': the request's DPoP jti was refused and nothing else was done
    # (``state`` says LIVE, but the request must be refused).
    proof_refused: str = ""

    @classmethod
    def from_reply(cls, reply: list[Any]) -> SessionCheck:
        """Decode the script's reply (its header documents the shapes)."""
        if reply[0] in _PROOF_REFUSALS:
            return cls(SessionState.LIVE, proof_refused=_PROOF_REFUSALS[reply[0]])
        state = _STATES[reply[0]]
        if state is SessionState.LIVE:
            # reply[5] is Redis's clock, which no caller needs.
            return cls(state, "", reply[1], int(reply[2]), reply[3], reply[4],
                       username=reply[6], binding_changed=reply[7],
                       absolute_ms=int(reply[8]), client_id=reply[9],
                       jkt=reply[10] if len(reply) > 10 else "")
        return cls(state, reply[1] if len(reply) > 1 else "", just_ended=len(reply) > 2,
                   binding_changed=reply[3] if len(reply) > 3 else "")
