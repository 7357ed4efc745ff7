"""Tell the app what happens to its session: sign-in, refresh, sign-out, idle, storage.

Callbacks run on the thread (or event loop) that caused the change. A Kivy app hops to its
UI thread with ``@mainthread``. A callback that raises is logged and skipped: an app bug in
a listener must never abort a refresh halfway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["AuthEvent", "EventName", "SessionInfo", "SignOutReason"]

_log = logging.getLogger("latchkey_client.events")


class EventName(StrEnum):
    """The events an app can subscribe to with ``client.on(name, callback)``."""

    SIGNED_IN = "signed_in"
    REFRESHED = "refreshed"
    SIGNED_OUT = "signed_out"
    IDLE_WARNING = "idle_warning"
    #: Secure storage is locked or unreachable for now: the session goes on in memory and
    #: the SDK writes (or reads) it once the store is back (``client.storage_unavailable``).
    STORAGE_UNAVAILABLE = "storage_unavailable"


class SignOutReason(StrEnum):
    """Why the session ended, as the app should explain it to the user."""

    USER = "user"  # this app called logout()
    IDLE = "idle"  # idle limit reached (client timer or server)
    ABSOLUTE = "absolute"  # absolute session lifetime reached
    REVOKED = "revoked"  # ended by the server (admin, device binding, leaked token, ...)
    REUSE = "reuse"  # refresh-token reuse detected: possible theft, all tokens dead
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a reason name, not a password
    REMOTE = "remote"  # logged out from another device or another process of this app
    STEP_UP = "step_up"  # replaced by a re-authenticated session elsewhere
    STORAGE_LOST = "storage_lost"  # secure storage lost the secret (key gone, restored backup)
    #: The server saw this session's token used without its device key (DPoP, P1) and
    #: ended the session: someone copied it.
    STOLEN = "stolen"


@dataclass(frozen=True)
class SessionInfo:
    """What an app may know about the current session; never a token.

    ``session_id`` identifies the session (it matches ``sessions()`` entries) but is kept out
    of ``repr`` because the server keeps it out of logs too.
    """

    session_id: str = field(repr=False)
    auth_level: str
    idle_timeout_seconds: float
    access_expires_in_seconds: float
    absolute_expires_in_seconds: float | None
    #: True when the session is bound to this installation's DPoP key (``token_type: DPoP``).
    dpop_bound: bool = False


@dataclass(frozen=True)
class AuthEvent:
    """One session change. ``reason`` is set for ``signed_out``, ``seconds_left`` for
    ``idle_warning`` and ``session`` for ``signed_in``/``refreshed``."""

    name: EventName
    reason: SignOutReason | None = None
    seconds_left: float | None = None
    session: SessionInfo | None = None


Listener = Callable[[AuthEvent], None]


class _Emitter:
    """Hold listeners per event name and call them safely."""

    def __init__(self) -> None:
        self._listeners: dict[EventName, list[Listener]] = {name: [] for name in EventName}
        self._lock = threading.Lock()

    def on(self, name: EventName | str, callback: Listener) -> Callable[[], None]:
        key = EventName(name)
        with self._lock:
            self._listeners[key].append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners[key]:
                    self._listeners[key].remove(callback)

        return unsubscribe

    def emit(self, event: AuthEvent) -> None:
        with self._lock:
            listeners = list(self._listeners[event.name])
        for callback in listeners:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - an app listener's bug must not break a refresh
                _log.exception("listener for %s raised", event.name.value)
