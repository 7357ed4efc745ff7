"""Bind a session to the device it was issued to, and act on a change (D3).

A session remembers the device id and the User-Agent of the login that created it. Every
protected request and every refresh is compared with them: the device id comes from the
``X-Device-Id`` header (clients send it on every request, and as ``device_id`` in the login
body), the user agent from ``User-Agent``. What a difference does is ``BINDING_POLICY``:

- ``off``: nothing.
- ``report``: one ``binding_changed`` security event per session and changed fingerprint
  (the store remembers what it reported, so a moved phone does not flood the stream).
- ``enforce``: the event, and the session is ended with reason ``binding``: the request
  gets 401 ``session_revoked``, and so does every other token of that session.

Both values are client-supplied, so binding cannot stop a thief who copies them; it stops
a token replayed from another client or tool, and makes the copy visible.
"""

from __future__ import annotations

import hashlib
import re

from flask import request

from .api.inputs import MAX_DEVICE_FIELD, client_ip, user_agent
from .errors import InvalidRequest, SessionRevoked
from .extension import Services

__all__ = [
    "DEVICE_ID_HEADER",
    "DEVICE_ID_PATTERN",
    "check_binding",
    "report_binding_change",
    "request_binding",
    "request_device_id",
]

DEVICE_ID_HEADER = "X-Device-Id"
# Printable ASCII: a header value is an identifier, not display text. openapi.py publishes
# the same pattern, so the document and the server agree on what is valid.
DEVICE_ID_PATTERN = rf"^[ -~]{{0,{MAX_DEVICE_FIELD}}}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


def request_device_id() -> str:
    """Return this request's ``X-Device-Id`` ('' when absent), checked like body fields."""
    value = request.headers.get(DEVICE_ID_HEADER, "")
    if not DEVICE_ID_RE.fullmatch(value):
        raise InvalidRequest(f"{DEVICE_ID_HEADER} must be printable ASCII, at most "
                             f"{MAX_DEVICE_FIELD} characters")
    return value


def request_binding() -> tuple[str, str, str]:
    """Return this request's (device id, user agent, fingerprint of the two)."""
    device_id, agent = request_device_id(), user_agent()
    fingerprint = hashlib.sha256(f"{device_id}\n{agent}".encode()).hexdigest()[:32]
    return device_id, agent, fingerprint


def report_binding_change(svc: Services, *, user_id: str, session_id: str, changed: str,
                          revoked: bool) -> None:
    """Raise the ``binding_changed`` event (and the revocation, if the policy ended it).

    Only *which* bound values changed is logged, never the values themselves.
    """
    svc.events.security("binding_changed", session_id=session_id, user_id=user_id,
                        changed=changed, policy=svc.settings.binding_policy, ip=client_ip(),
                        revoked=revoked)
    if revoked:
        svc.events.lifecycle("session_revoked", session_id=session_id, user_id=user_id,
                             reason="binding")


def check_binding(svc: Services, *, user_id: str, session_id: str, bound_device_id: str,
                  bound_user_agent: str) -> None:
    """Compare a refresh with the session's binding; report or end it per the policy.

    Protected requests do the same inside ``verify_touch.lua`` (one round trip); a refresh
    learns the binding from the rotation script and decides here.
    """
    policy = svc.settings.binding_policy
    if policy == "off":
        return
    device_id, agent, fingerprint = request_binding()
    changed = [name for name, now, bound in (("device_id", device_id, bound_device_id),
                                             ("user_agent", agent, bound_user_agent))
               if now != bound]
    if not changed:
        return
    if policy == "enforce":
        outcome = svc.store.revoke_session(user_id, session_id, "binding")
        report_binding_change(svc, user_id=user_id, session_id=session_id,
                              changed=",".join(changed), revoked=outcome == "revoked")
        raise SessionRevoked("binding")
    # Report once per session and new (device id, user agent) pair.
    if svc.store.note_binding_change(user_id, session_id, fingerprint):
        report_binding_change(svc, user_id=user_id, session_id=session_id,
                              changed=",".join(changed), revoked=False)
