"""Hold one session's state, shared by the sync and async halves of the SDK.

Everything here is I/O-free apart from the storage calls: which tokens we hold and when
they are due (monotonic), how a token response is accepted, how a session ends locally and
what the app is told. The network halves (``auth``, ``client``, ``aclient``) call into it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from ._timing import refresh_due_at
from .errors import (
    ApiError,
    InvalidTokenError,
    SessionEndedError,
    SessionExpiredError,
    SessionRevokedError,
    StorageError,
)
from .events import AuthEvent, EventName, SessionInfo, SignOutReason, _Emitter
from .storage.base import MemoryStorage, Storage

__all__: list[str] = []

_log = logging.getLogger("latchkey_client")

REFRESH_KEY = "refresh_token"
PENDING_KEY = "pending_revocations"

# The server's session_revoked reasons (API.md), as the app should hear them.
_REVOKE_REASONS: dict[str | None, SignOutReason] = {
    "logout": SignOutReason.REMOTE,
    "remote": SignOutReason.REMOTE,
    "reuse": SignOutReason.REUSE,
    "password_change": SignOutReason.PASSWORD_CHANGE,
    "step_up": SignOutReason.STEP_UP,
}


def sign_out_reason(error: SessionEndedError | InvalidTokenError) -> SignOutReason:
    """Translate a server error that ended the session into the reason the app sees."""
    if isinstance(error, SessionExpiredError):
        return SignOutReason.ABSOLUTE if error.reason == "absolute" else SignOutReason.IDLE
    if isinstance(error, SessionRevokedError):
        return _REVOKE_REASONS.get(error.reason, SignOutReason.REVOKED)
    return SignOutReason.REVOKED


@dataclass(frozen=True)
class Tokens:
    """An immutable snapshot of the session's secrets and deadlines (monotonic seconds).

    Replaced whole on every change, so a reader never sees half a refresh; ``generation``
    lets a waiter tell whether someone else refreshed while it waited for the lock.
    """

    access_token: str | None = field(repr=False, default=None)
    refresh_token: str | None = field(repr=False, default=None)
    session_id: str | None = field(repr=False, default=None)
    access_due_at: float = 0.0
    access_expires_at: float = 0.0
    absolute_expires_at: float | None = None
    idle_timeout_seconds: float = 0.0
    access_lifetime_seconds: float = 0.0
    auth_level: str = "normal"
    generation: int = 0


@dataclass(frozen=True)
class LogoutResult:
    """What ``logout()`` achieved. Local tokens are always gone.

    ``server_confirmed``: the server answered that the session is ended.
    ``pending``: the server could not be reached; the revocation is remembered in secure
    storage and retried on the next successful connection.
    """

    server_confirmed: bool
    pending: bool


class SessionCore:
    """The state machine behind one client: tokens, storage, events, pending revocations."""

    def __init__(
        self,
        *,
        storage: Storage | None,
        stay_signed_in: bool,
        refresh_leeway_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self.stay_signed_in = stay_signed_in
        self.refresh_leeway_seconds = refresh_leeway_seconds
        self.clock = clock
        self.events = _Emitter()
        self.tokens = Tokens()
        self._state_lock = threading.Lock()
        self.pending: list[str] = self._load_pending()
        self.pending_lock = threading.Lock()
        if stay_signed_in:
            stored = self.storage.load(REFRESH_KEY)
            if stored:
                # Restored: no access token yet, so the first request refreshes.
                self.tokens = Tokens(refresh_token=stored, generation=1)

    def __repr__(self) -> str:
        return f"SessionCore(signed_in={self.signed_in}, storage={self.storage!r})"

    # -- reading -----------------------------------------------------------------------------

    @property
    def signed_in(self) -> bool:
        return self.tokens.refresh_token is not None

    def session_info(self, tokens: Tokens | None = None) -> SessionInfo | None:
        t = tokens or self.tokens
        if t.session_id is None:
            return None
        now = self.clock()
        return SessionInfo(
            session_id=t.session_id,
            auth_level=t.auth_level,
            idle_timeout_seconds=t.idle_timeout_seconds,
            access_expires_in_seconds=max(0.0, t.access_expires_at - now),
            absolute_expires_in_seconds=(
                None if t.absolute_expires_at is None else max(0.0, t.absolute_expires_at - now)
            ),
        )

    def absolute_expired(self, tokens: Tokens) -> bool:
        return tokens.absolute_expires_at is not None and self.clock() >= tokens.absolute_expires_at

    def access_fresh(self, tokens: Tokens) -> bool:
        return tokens.access_token is not None and self.clock() < tokens.access_due_at

    def access_usable(self, tokens: Tokens) -> bool:
        return tokens.access_token is not None and self.clock() < tokens.access_expires_at

    # -- changing ----------------------------------------------------------------------------

    def accept(self, doc: dict[str, Any], *, received_at: float, event: EventName) -> Tokens:
        """Take a token response (API.md "Token response"), persist and announce it."""
        try:
            access = doc["access_token"]
            refresh = doc["refresh_token"]
            expires_in = float(doc["expires_in"])
            session_id = str(doc["session_id"])
            if not isinstance(access, str) or not isinstance(refresh, str):
                raise TypeError("tokens must be strings")
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(
                "the server sent a malformed token response", code="bad_response"
            ) from exc
        absolute = doc.get("absolute_expires_in")
        with self._state_lock:
            tokens = Tokens(
                access_token=access,
                refresh_token=refresh,
                session_id=session_id,
                access_due_at=refresh_due_at(
                    received_at, expires_in, leeway_seconds=self.refresh_leeway_seconds
                ),
                access_expires_at=received_at + expires_in,
                absolute_expires_at=None if absolute is None else received_at + float(absolute),
                idle_timeout_seconds=float(doc.get("idle_timeout") or 0),
                access_lifetime_seconds=expires_in,
                auth_level=str(doc.get("auth_level", "normal")),
                generation=self.tokens.generation + 1,
            )
            # Persist before anyone can use the new pair: a crash after this point still
            # leaves the newest refresh token on disk, never the spent one.
            if self.stay_signed_in:
                self.storage.save(REFRESH_KEY, refresh)
            self.tokens = tokens
        _log.debug("session %s", event.value)
        self.events.emit(AuthEvent(event, session=self.session_info(tokens)))
        return tokens

    def adopt_refresh_token(self, refresh: str) -> Tokens:
        """Use a refresh token another process stored (it rotated ours).

        Our access token stays: it is valid until its own expiry whichever process rotated.
        """
        with self._state_lock:
            self.tokens = replace(self.tokens, refresh_token=refresh)
            return self.tokens

    def wipe(self, reason: SignOutReason, *, revoke_later: bool = False) -> str | None:
        """Forget every token, locally and in storage; announce ``signed_out`` once.

        Returns the refresh token that was held, so logout can still revoke it. With
        ``revoke_later`` (logout) that token is first recorded as a pending revocation, in
        the same step as the wipe and before the event, so no listener can lose it.
        """
        with self._state_lock:
            old = self.tokens
            if revoke_later and old.refresh_token is not None:
                self.add_pending(old.refresh_token)
            self.tokens = Tokens(generation=old.generation + 1)
            try:
                self.storage.clear(REFRESH_KEY)
            except StorageError:
                _log.warning("could not clear the stored refresh token")
        if old.refresh_token is not None:
            _log.info("signed out (%s)", reason.value)
            self.events.emit(AuthEvent(EventName.SIGNED_OUT, reason=reason))
        return old.refresh_token

    def end_from_error(self, error: SessionEndedError | InvalidTokenError) -> None:
        """Wipe local state because the server said the session is over."""
        self.wipe(sign_out_reason(error))

    # -- pending revocations -----------------------------------------------------------------

    def _load_pending(self) -> list[str]:
        try:
            raw = self.storage.load(PENDING_KEY)
            values = json.loads(raw) if raw else []
        except (StorageError, ValueError):
            _log.warning("could not read pending revocations")
            return []
        return [v for v in values if isinstance(v, str)]

    def _save_pending(self) -> None:
        try:
            if self.pending:
                self.storage.save(PENDING_KEY, json.dumps(self.pending))
            else:
                self.storage.clear(PENDING_KEY)
        except StorageError:
            _log.warning("could not store pending revocations")

    def add_pending(self, refresh_token: str) -> None:
        with self.pending_lock:
            if refresh_token not in self.pending:
                self.pending.append(refresh_token)
                self._save_pending()

    def drop_pending(self, refresh_token: str) -> None:
        with self.pending_lock:
            if refresh_token in self.pending:
                self.pending.remove(refresh_token)
                self._save_pending()


def problem_code(response: httpx.Response) -> str | None:
    """Return the problem+json ``code`` of a read response, or ``None``."""
    try:
        doc = json.loads(response.content or b"{}")
    except ValueError:
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else None
