"""Hold one session's state, shared by the sync and async halves of the SDK.

Everything here is I/O-free apart from the storage calls: which tokens we hold and when
they are due (monotonic), how a token response is accepted, how a session ends locally and
what the app is told. The network halves (``auth``, ``client``, ``aclient``) call into it.

Storage failures follow M2 here, in one place. ``StorageUnavailable`` (locked, try later)
never ends a session: the session stays in memory, nothing is wiped, and the write (or the
read of a stored session) waits in :attr:`SessionCore.deferred` until
:meth:`SessionCore.retry_storage` succeeds, which the clients call on every call, on pause
and on resume. ``StorageLost`` (the secret is gone) is a clean sign-out with reason
``storage_lost``; a refresh token still held in memory is queued for revocation.
"""

from __future__ import annotations

import hashlib
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
    NotSignedInError,
    SessionEndedError,
    SessionExpiredError,
    SessionRevokedError,
    StorageError,
    StorageLost,
    StorageUnavailable,
    challenge_error,
)
from .events import AuthEvent, EventName, SessionInfo, SignOutReason, _Emitter
from .storage.base import MemoryStorage, Storage

__all__: list[str] = []

_log = logging.getLogger("latchkey_client")

REFRESH_KEY = "refresh_token"
PENDING_KEY = "pending_revocations"
#: The access token shared by sibling processes, only with ``share_access_token=True``.
SHARED_ACCESS_KEY = "shared_access"

#: What may wait for the storage to come back (``SessionCore.deferred``).
_RESTORE, _REFRESH, _PENDING = "restore", "refresh", "pending"


def boot_clock() -> float:
    """Return seconds on a monotonic clock that keeps counting while the device sleeps.

    ``time.monotonic`` stands still during suspend on Linux and Android, so a phone asleep
    for an hour would look paused for seconds; ``CLOCK_BOOTTIME`` counts suspend and, like
    ``monotonic``, cannot be moved by changing the device's clock. Where it does not exist
    (Apple platforms, Windows) this is ``time.monotonic``.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()

# The server's session_revoked reasons (API.md), as the app should hear them.
_REVOKE_REASONS: dict[str | None, SignOutReason] = {
    "logout": SignOutReason.REMOTE,
    "remote": SignOutReason.REMOTE,
    "reuse": SignOutReason.REUSE,
    "password_change": SignOutReason.PASSWORD_CHANGE,
    "step_up": SignOutReason.STEP_UP,
    "stolen": SignOutReason.STOLEN,
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
    #: ``token_type: DPoP``: the session is bound to this installation's key (P1), so the
    #: access token goes as ``Authorization: DPoP`` with a proof beside it.
    bound: bool = False
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
        share_access_token: bool = False,
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self.stay_signed_in = stay_signed_in
        self.refresh_leeway_seconds = refresh_leeway_seconds
        self.share_access_token = share_access_token
        self._base_clock = clock
        #: The clock a pause is measured on: it must keep counting while the device sleeps.
        #: With an injected ``clock`` (tests, an app's own) it is that clock.
        self.sleep_clock: Callable[[], float] = boot_clock if clock is time.monotonic else clock
        self._slept_seconds = 0.0
        self._paused_at: tuple[float, float] | None = None
        self.events = _Emitter()
        self.tokens = Tokens()
        self._state_lock = threading.RLock()
        #: Storage work waiting for the store to come back (``restore``, ``refresh``,
        #: ``pending``); see :meth:`retry_storage`.
        self.deferred: set[str] = set()
        self._announced = False  # storage_unavailable told for the present wait
        #: Why the last session ended here (``None`` while signed in or never signed in).
        self.signed_out_reason: SignOutReason | None = None
        self.pending_lock = threading.Lock()
        self._pending_known = False
        self.pending: list[str] = []
        with self.pending_lock:
            self._merge_stored_pending()
        if stay_signed_in and self._restore_stored() == "lost":
            # A backup restored onto a new phone, a key the platform invalidated: a clean
            # signed-out state with its reason, never an exception out of the constructor.
            self.storage_lost()

    def __repr__(self) -> str:
        return f"SessionCore(signed_in={self.signed_in}, storage={self.storage!r})"

    # -- reading -----------------------------------------------------------------------------

    @property
    def signed_in(self) -> bool:
        return self.tokens.refresh_token is not None

    def clock(self) -> float:
        """Return now on the SDK's monotonic clock, plus the sleep it missed while paused."""
        return self._base_clock() + self._slept_seconds

    @property
    def storage_unavailable(self) -> bool:
        """True while a storage read or write waits for the store to come back."""
        return bool(self.deferred)

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
            dpop_bound=t.bound,
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
        lost = False
        with self._state_lock:
            # Signed out while this refresh was in flight (the idle logout on resume, say):
            # the new pair must not bring the session back here.
            wiped = event is EventName.REFRESHED and self.tokens.refresh_token is None
            if not wiped:
                tokens = Tokens(
                    access_token=access,
                    refresh_token=refresh,
                    session_id=session_id,
                    access_due_at=refresh_due_at(
                        received_at, expires_in, leeway_seconds=self.refresh_leeway_seconds
                    ),
                    access_expires_at=received_at + expires_in,
                    absolute_expires_at=(None if absolute is None
                                         else received_at + float(absolute)),
                    idle_timeout_seconds=float(doc.get("idle_timeout") or 0),
                    access_lifetime_seconds=expires_in,
                    auth_level=str(doc.get("auth_level", "normal")),
                    bound=str(doc.get("token_type", "")).lower() == "dpop",
                    generation=self.tokens.generation + 1,
                )
                self.tokens = tokens
                self.signed_out_reason = None
                self.deferred.discard(_RESTORE)  # a new session replaces what was stored
                if self.stay_signed_in:
                    try:
                        # A locked store defers the write: the session stays in memory
                        # and the write is retried (a crash before it lands leaves the
                        # previous token on disk, as a crash before the response would).
                        self._persist()
                    except StorageLost:
                        lost = True
        if wiped:
            self.add_pending(refresh)  # revoke the successor too, should the server honour it
            raise NotSignedInError("signed out while a refresh was in flight")
        if lost:
            # The store can no longer keep this session: end it cleanly, and revoke the
            # refresh token the server has just issued (still in memory) when possible.
            self.storage_lost()
            raise StorageLost("secure storage cannot keep the session; signed out")
        self._announce_storage()
        _log.debug("session %s", event.value)
        self.events.emit(AuthEvent(event, session=self.session_info(tokens)))
        return tokens

    def adopt_stored(self, refresh: str) -> Tokens:
        """Use the session another process stored (it rotated our refresh token).

        With ``share_access_token`` the access token that process stored for this refresh
        token is adopted too while it is fresh, so this process needs no refresh of its
        own; otherwise only the refresh token is (our access token stays valid until its
        own expiry, whichever process rotated).
        """
        with self._state_lock:
            shared = self._read_shared(refresh) if self.share_access_token else None
            if shared is None:
                self.tokens = replace(self.tokens, refresh_token=refresh)
            else:
                self.tokens = replace(shared, generation=self.tokens.generation + 1)
            return self.tokens

    def wipe(self, reason: SignOutReason, *, revoke_later: bool = False) -> str | None:
        """Forget every token, locally and in storage; announce ``signed_out`` once.

        Returns the refresh token that was held, so logout can still revoke it. With
        ``revoke_later`` (logout) that token is first recorded as a pending revocation, in
        the same step as the wipe and before the event, so no listener can lose it.
        A store that cannot be cleared now is cleared when it comes back (:meth:`retry_storage`).
        """
        with self._state_lock:
            old = self.tokens
            if revoke_later and old.refresh_token is not None:
                self.add_pending(old.refresh_token)
            self.tokens = Tokens(generation=old.generation + 1)
            self.deferred.discard(_RESTORE)
            try:
                self._persist()
            except StorageLost:
                _log.warning("the stored session was lost already")
            if old.refresh_token is not None:
                self.signed_out_reason = reason
        self._announce_storage()
        if old.refresh_token is not None:
            _log.info("signed out (%s)", reason.value)
            self.events.emit(AuthEvent(EventName.SIGNED_OUT, reason=reason))
        return old.refresh_token

    def end_from_error(self, error: SessionEndedError | InvalidTokenError) -> None:
        """Wipe local state because the server said the session is over."""
        self.wipe(sign_out_reason(error))

    def storage_lost(self) -> None:
        """Sign out cleanly because storage lost the secret; queue the revocation.

        The refresh token still held in memory (if any) goes to the pending revocations,
        which the clients send at once (and on every later connection until confirmed).
        """
        held = self.wipe(SignOutReason.STORAGE_LOST)
        self.signed_out_reason = SignOutReason.STORAGE_LOST
        if held is not None:
            self.add_pending(held)

    def forget_stored(self) -> None:
        """Remove a stored session a sign-in without ``stay_signed_in`` replaces."""
        with self._state_lock:
            self.deferred.discard(_RESTORE)
            try:
                self._persist()
            except StorageLost:
                _log.warning("the stored session was lost already")
        self._announce_storage()

    # -- storage: persist, restore, retry ----------------------------------------------------

    def _persist(self) -> None:
        """Make the stored session match memory (state lock held); defer if unavailable.

        Raises ``StorageLost`` for the caller to end the session.
        """
        tokens = self.tokens
        try:
            if self.stay_signed_in and tokens.refresh_token is not None:
                self.storage.save(REFRESH_KEY, tokens.refresh_token)
                if self.share_access_token:
                    self.storage.save(SHARED_ACCESS_KEY, self._shared_record(tokens))
            else:
                self.storage.clear(REFRESH_KEY)
                if self.share_access_token:
                    self.storage.clear(SHARED_ACCESS_KEY)
        except StorageUnavailable:
            _log.warning("secure storage is unavailable; the session is kept in memory")
            self._defer(_REFRESH)
            return
        self.deferred.discard(_REFRESH)

    def _restore_stored(self) -> str:
        """Read the stored session: ``"restored"``, ``"none"``, ``"deferred"`` or ``"lost"``.

        A locked store is not "no session" (M2): the read waits for :meth:`retry_storage`.
        """
        try:
            stored = self.storage.load(REFRESH_KEY)
        except StorageUnavailable:
            _log.warning("secure storage is unavailable; the stored session is read later")
            self._defer(_RESTORE)
            return "deferred"
        except StorageLost:
            _log.warning("the stored session can never be read again (storage lost)")
            self.deferred.discard(_RESTORE)
            return "lost"
        self.deferred.discard(_RESTORE)
        if not stored or self.tokens.refresh_token is not None:
            return "none"
        # Restored: no access token yet, so the first request refreshes.
        self.tokens = Tokens(refresh_token=stored, generation=self.tokens.generation + 1)
        return "restored"

    def retry_storage(self) -> None:
        """Do the storage work that waited for a locked store, if it is back.

        Cheap when nothing waits; the clients call it before every call, on pause and on
        resume. A stored session that becomes readable is announced as ``signed_in``.
        """
        if not self.deferred:
            return
        restored = lost = False
        with self._state_lock:
            if _RESTORE in self.deferred:
                outcome = self._restore_stored()
                restored, lost = outcome == "restored", outcome == "lost"
            if _REFRESH in self.deferred:
                try:
                    self._persist()
                except StorageLost:
                    lost = True
        if _PENDING in self.deferred:
            with self.pending_lock:
                self._save_pending()
        if lost:
            self.storage_lost()
        self._announce_storage()
        if restored:
            _log.info("stored session read after the store came back")
            self.events.emit(AuthEvent(EventName.SIGNED_IN))

    def _defer(self, what: str) -> None:
        self.deferred.add(what)

    def _announce_storage(self) -> None:
        """Emit ``storage_unavailable`` once each time storage work starts waiting."""
        if not self.deferred:
            self._announced = False
            return
        if self._announced:
            return
        self._announced = True
        self.events.emit(AuthEvent(EventName.STORAGE_UNAVAILABLE))

    # -- the access token shared by sibling processes ----------------------------------------

    def _shared_record(self, tokens: Tokens) -> str:
        """Serialise ``tokens`` for sibling processes, deadlines on the shared boot clock.

        Every process of one boot reads the same ``CLOCK_BOOTTIME`` (or monotonic clock),
        so a deadline written by one is meaningful to the others; ``for`` ties the record to
        the refresh token stored beside it.
        """
        shift = self.sleep_clock() - self.clock()
        return json.dumps({
            "for": _digest(tokens.refresh_token or ""),
            "access_token": tokens.access_token,
            "session_id": tokens.session_id,
            "due_at": tokens.access_due_at + shift,
            "expires_at": tokens.access_expires_at + shift,
            "absolute_at": (None if tokens.absolute_expires_at is None
                            else tokens.absolute_expires_at + shift),
            "idle_timeout": tokens.idle_timeout_seconds,
            "lifetime": tokens.access_lifetime_seconds,
            "auth_level": tokens.auth_level,
            "bound": tokens.bound,
        })

    def _read_shared(self, refresh: str) -> Tokens | None:
        """Return the stored sibling session for ``refresh`` if its access token is fresh."""
        try:
            raw = self.storage.load(SHARED_ACCESS_KEY)
            doc = json.loads(raw) if raw else None
            if not isinstance(doc, dict) or doc.get("for") != _digest(refresh):
                return None
            shift = self.clock() - self.sleep_clock()
            absolute = doc.get("absolute_at")
            tokens = Tokens(
                access_token=str(doc["access_token"]), refresh_token=refresh,
                session_id=str(doc["session_id"]),
                access_due_at=float(doc["due_at"]) + shift,
                access_expires_at=float(doc["expires_at"]) + shift,
                absolute_expires_at=None if absolute is None else float(absolute) + shift,
                idle_timeout_seconds=float(doc["idle_timeout"]),
                access_lifetime_seconds=float(doc["lifetime"]),
                auth_level=str(doc["auth_level"]),
                bound=bool(doc.get("bound", False)),
            )
        except (StorageError, ValueError, KeyError, TypeError):
            return None  # no usable record: this process refreshes with the stored token
        return tokens if self.access_fresh(tokens) else None

    # -- pause and resume --------------------------------------------------------------------

    def pause(self) -> None:
        """Note when the app went to the background, on both clocks."""
        self._paused_at = (self._base_clock(), self.sleep_clock())

    def resume(self) -> float:
        """Return the seconds spent paused; add the sleep the SDK's clock did not count.

        After this, every deadline (access token due, absolute end, idle limit) is measured
        as if the monotonic clock had kept counting while the device slept.
        """
        if self._paused_at is None:
            return 0.0
        (base_at, sleep_at), self._paused_at = self._paused_at, None
        away = max(0.0, self.sleep_clock() - sleep_at)
        missed = away - (self._base_clock() - base_at)
        if missed > 0:
            self._slept_seconds += missed
        return away

    # -- pending revocations -----------------------------------------------------------------

    def _merge_stored_pending(self) -> bool:
        """Read the stored pending revocations into memory (``pending_lock`` held).

        Until they have been read nothing may overwrite them: after a locked store at
        start-up, this run's first save would otherwise erase revocations still on disk.
        """
        if self._pending_known:
            return True
        try:
            raw = self.storage.load(PENDING_KEY)
            values = json.loads(raw) if raw else []
            if not isinstance(values, list):
                raise ValueError("not a list")
        except StorageUnavailable:
            _log.warning("pending revocations cannot be read now; they are read later")
            self._defer(_PENDING)
            return False
        except (StorageLost, ValueError):
            _log.warning("the stored pending revocations are lost")
            values = []
        stored = [v for v in values if isinstance(v, str)]
        self.pending = stored + [v for v in self.pending if v not in stored]
        self._pending_known = True
        return True

    def _save_pending(self) -> None:
        """Store the pending revocations (``pending_lock`` held), or defer the write."""
        if not self._merge_stored_pending():
            return
        try:
            if self.pending:
                self.storage.save(PENDING_KEY, json.dumps(self.pending))
            else:
                self.storage.clear(PENDING_KEY)
        except StorageUnavailable:
            _log.warning("could not store pending revocations now; retried later")
            self._defer(_PENDING)
            return
        except StorageLost:
            _log.warning("could not store pending revocations (storage lost)")
        self.deferred.discard(_PENDING)

    def add_pending(self, refresh_token: str) -> None:
        with self.pending_lock:
            if refresh_token not in self.pending:
                self.pending.append(refresh_token)
                self._save_pending()
        self._announce_storage()

    def drop_pending(self, refresh_token: str) -> None:
        with self.pending_lock:
            if refresh_token in self.pending:
                self.pending.remove(refresh_token)
                self._save_pending()
        self._announce_storage()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def problem_code(response: httpx.Response) -> str | None:
    """Return the problem+json ``code`` of a read response, else its challenge's ``error``."""
    try:
        doc = json.loads(response.content or b"{}")
    except ValueError:
        doc = None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else challenge_error(response)
