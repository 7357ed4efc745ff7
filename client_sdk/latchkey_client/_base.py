"""Build what the sync and async clients share: options, rules and every call's plan.

The plans are sans-I/O generators (``_steps.py``), so the retry, logout and account logic
is written once here and the two clients only drive it.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from . import __version__
from ._core import LogoutResult, SessionCore
from ._steps import Plan, Send, Sleep, attempt_timeout, map_transport_error, never_sent
from ._timing import Deadline, backoff_delay_seconds
from .auth import DEFAULT_REFRESH_REPLAY_SECONDS, LatchkeyAuth
from .dpop_flow import DPoPProver, ProofAuth
from .dpop_keys import DeviceKey, default_device_key
from .errors import (
    ApiError,
    ClientClosedError,
    ConfigurationError,
    LatchkeyError,
    NetworkError,
    error_from_response,
    retry_after_seconds,
)
from .events import AuthEvent, EventName, SessionInfo, SignOutReason
from .idle import AsyncIdleTimer, IdleTimer, default_warning_seconds
from .storage.base import Storage
from .transport import (
    TokenOrigins,
    check_base_url,
    check_device_id,
    check_request_url,
    check_user_agent,
    pinned_ssl_context,
    same_origin,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT_SECONDS",
    "LOGOUT_TIMEOUT",
    "LOGOUT_TOTAL_TIMEOUT_SECONDS",
    "RemoteSession",
]

_log = logging.getLogger("latchkey_client")

#: Per-attempt limits: connecting on a poor mobile link can take seconds; a Latchkey answer
#: should not take longer than a read of 10 s. Explicit values, never httpx's defaults.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)
#: The whole call, retries and backoff included, must finish within this.
DEFAULT_TOTAL_TIMEOUT_SECONDS = 30.0
#: Logout must not hold the user on a spinner: the local wipe happens regardless, and an
#: unconfirmed revocation is retried later.
LOGOUT_TIMEOUT = httpx.Timeout(connect=2.0, read=3.0, write=3.0, pool=2.0)
LOGOUT_TOTAL_TIMEOUT_SECONDS = 5.0

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RemoteSession:
    """One of the user's live sessions, as ``sessions()`` lists them."""

    session_id: str
    device_name: str | None
    user_agent: str | None
    ip: str | None
    created_at: datetime | None
    last_seen_at: datetime | None
    expires_at: datetime | None
    auth_level: str
    current: bool

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RemoteSession:
        """Build from one entry of ``GET /v1/auth/sessions``."""

        def when(name: str) -> datetime | None:
            raw = doc.get(name)
            if not isinstance(raw, str):
                return None
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))

        return cls(
            session_id=str(doc["session_id"]),
            device_name=doc.get("device_name"),
            user_agent=doc.get("user_agent"),
            ip=doc.get("ip"),
            created_at=when("created_at"),
            last_seen_at=when("last_seen_at"),
            expires_at=when("expires_at"),
            auth_level=str(doc.get("auth_level", "normal")),
            current=bool(doc.get("current", False)),
        )


def revocation_outcome(response: httpx.Response) -> bool | None:
    """Read a logout answer: True confirmed, False refused for good, None try again later."""
    if response.status_code < 300:
        return True
    if response.status_code in RETRY_STATUSES or response.status_code >= 500:
        return None
    return False  # a 4xx other than 429: the server will never accept this token


class ClientBase:
    """Options, rules and every call's plan, shared by both clients.

    As httpx's ``BaseClient`` holds what its two clients share, this holds each call as a
    sans-I/O plan (``_steps.py``): the retry plan of :meth:`_send_plan`, the logout outcome
    of :meth:`_logout_plan`, the account calls. :class:`LatchkeyClient` and
    :class:`AsyncLatchkeyClient` only drive the plans (blocking or with ``await``) and run
    the idle timer on a thread or a task.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_origins: Iterable[str] = (),
        storage: Storage | None = None,
        stay_signed_in: bool = False,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        total_timeout_seconds: float = DEFAULT_TOTAL_TIMEOUT_SECONDS,
        max_retries: int = 3,
        pins: Iterable[str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        refresh_leeway_seconds: float = 30.0,
        idle_timeout_seconds: float | None = None,
        idle_warning_seconds: float | None = None,
        idle_logout: bool = True,
        device_id: str | None = None,
        device_name: str | None = None,
        user_agent: str | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        share_access_token: bool = False,
        dpop: bool = True,
        device_key: DeviceKey | None = None,
    ) -> None:
        self._base_url = check_base_url(base_url)
        self._origins = TokenOrigins(self._base_url, api_origins)
        device_id, user_agent = check_device_id(device_id), check_user_agent(user_agent)
        if pins is not None:
            if self._base_url.scheme != "https":
                raise ConfigurationError("certificate pinning needs an https:// base URL")
            verify = pinned_ssl_context(pins, verify=verify)
        elif verify is False and self._base_url.scheme == "https":
            raise ConfigurationError("verify=False would accept any certificate; pin instead")
        if max_retries < 0 or total_timeout_seconds <= 0:
            raise ConfigurationError("max_retries >= 0 and total_timeout_seconds > 0")
        self._verify = verify
        self._timeout = timeout
        self._total_timeout_seconds = total_timeout_seconds
        self._max_retries = max_retries
        self._idle_timeout_seconds = idle_timeout_seconds
        self._idle_warning_seconds = idle_warning_seconds
        self._idle_logout = idle_logout
        self._device_id = device_id
        self._device_name = device_name
        self._headers = {
            "User-Agent": user_agent or f"latchkey-client/{__version__}",
            "Accept": "application/json",
        }
        if device_id is not None:
            # The server binds the session to this id (D3) and compares it on every request,
            # refresh included: send it on all of them, not only in the login body.
            self._headers["X-Device-Id"] = device_id
        self._core = SessionCore(
            storage=storage, stay_signed_in=stay_signed_in,
            refresh_leeway_seconds=refresh_leeway_seconds, clock=clock,
            share_access_token=share_access_token,
        )
        self._idle: IdleTimer | AsyncIdleTimer | None = None
        self._idle_lock = threading.Lock()
        # Taken without waiting, so it serves both clients: a flush already under way (the
        # call that triggered this one, or another thread or task) is left to finish alone.
        self._flushing = threading.Lock()
        self._core.events.on(EventName.SIGNED_OUT, self._stop_idle_timer)
        # DPoP (P1): on by default; the key goes with the storage (the platform's on a
        # phone) unless the app names one.
        self._prover: DPoPProver | None = None
        if dpop:
            key = device_key if device_key is not None else default_device_key(
                self._core.storage, persist=stay_signed_in)
            self._prover = DPoPProver(key)
        elif device_key is not None:
            raise ConfigurationError("device_key without dpop: pass dpop=True or no key")
        self._sign_in_auth = None if self._prover is None else ProofAuth(self._prover,
                                                                         create=True)
        self._http = self._open_http(self._http_options(transport))
        self._auth = LatchkeyAuth(
            self._core,
            origin=self._base_url,
            refresh_url=self._url("v1/auth/refresh"),
            sync_http=self._http if isinstance(self._http, httpx.Client) else None,
            async_http=self._http if isinstance(self._http, httpx.AsyncClient) else None,
            refresh_timeout=self._timeout,
            refresh_replay_seconds=DEFAULT_REFRESH_REPLAY_SECONDS,
            device_id=device_id,
            user_agent=self._headers["User-Agent"],
            origins=self._origins,
            prover=self._prover,
        )

    def _open_http(self, options: dict[str, Any]) -> Any:
        """Create the HTTP client: ``httpx.Client`` or ``httpx.AsyncClient``."""
        raise NotImplementedError

    @property
    def auth(self) -> LatchkeyAuth:
        """The ``httpx.Auth`` to pass to your own httpx client for your API."""
        return self._auth

    def _start_idle_timer(self, timeout_seconds: float,
                          warn_before_seconds: float) -> IdleTimer | AsyncIdleTimer:
        """Start the idle timer on a thread (sync) or a task (async)."""
        raise NotImplementedError

    def _http_options(self, transport: Any) -> dict[str, Any]:
        return {
            "timeout": self._timeout,
            "verify": self._verify,
            "follow_redirects": False,  # a redirect must never carry Authorization away
            "headers": self._headers,
            "transport": transport,
            "trust_env": False,  # no proxy or netrc picked up behind the app's back
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={str(self._base_url)!r}, "
            f"signed_in={self._core.signed_in}, storage={self._core.storage!r})"
        )

    # -- public state ------------------------------------------------------------------------

    @property
    def base_url(self) -> httpx.URL:
        """The server's base URL, checked at construction."""
        return self._base_url

    @property
    def api_origins(self) -> tuple[str, ...]:
        """The app's API origins the access token may go to, besides the Latchkey server."""
        return self._origins.api_origins

    @property
    def device_key_holder(self) -> str | None:
        """Which store holds this installation's DPoP key ("Android Keystore", ...);
        ``None`` with ``dpop=False``."""
        return None if self._prover is None else self._prover.holder

    @property
    def device_key_thumbprint(self) -> str | None:
        """The DPoP key's RFC 7638 thumbprint (the tokens' ``cnf.jkt``); ``None`` before
        the first sign-in made the key, or with ``dpop=False``."""
        return None if self._prover is None else self._prover.thumbprint()

    @property
    def is_signed_in(self) -> bool:
        """True while this client holds a session (it may still need a refresh)."""
        return self._core.signed_in

    @property
    def session(self) -> SessionInfo | None:
        """The current session's public facts, or ``None``."""
        return self._core.session_info()

    @property
    def pending_revocations(self) -> int:
        """How many logouts the server has not confirmed yet."""
        return len(self._core.pending)

    @property
    def storage_unavailable(self) -> bool:
        """True while secure storage is locked and a write (or the stored session) waits.

        The session goes on in memory meanwhile; the SDK retries on every call and on
        resume. The ``storage_unavailable`` event fires when this turns true.
        """
        return self._core.storage_unavailable

    @property
    def signed_out_reason(self) -> SignOutReason | None:
        """Why the last session of this client ended (``storage_lost`` included, which can
        happen in the constructor, before any listener is there); ``None`` while signed in."""
        return self._core.signed_out_reason

    def on(
        self, event: EventName | str, callback: Callable[[AuthEvent], None]
    ) -> Callable[[], None]:
        """Subscribe to ``signed_in``, ``refreshed``, ``signed_out`` or ``idle_warning``.

        Returns a function that unsubscribes.
        """
        return self._core.events.on(event, callback)

    # -- request building --------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        """Resolve ``path``: relative to ``base_url``, or absolute on one of the session's
        origins; anything else is refused before a byte is sent (S2, R4)."""
        parsed = httpx.URL(path)
        # Absolute means a scheme and a host: "/search?next=https://..." is still a path.
        url = parsed if parsed.is_absolute_url else self._base_url.join(path.lstrip("/"))
        check_request_url(url)
        self._origins.check(url)
        return url

    def _strip_if_foreign(self, request: httpx.Request) -> None:
        """The HTTP client's request hook: no session header leaves the session's origins,
        whatever redirect the app chose to follow (``follow_redirects=True``)."""
        self._origins.strip_if_foreign(request)

    def _is_own_origin(self, url: httpx.URL) -> bool:
        return same_origin(url, self._base_url)

    def _login_body(self, username: str, password: str) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "password": password}
        if self._device_id is not None:
            body["device_id"] = self._device_id
        if self._device_name is not None:
            body["device_name"] = self._device_name
        return body

    def _idle_settings(self) -> tuple[float, float] | None:
        if not self._idle_logout:
            return None
        timeout = self._idle_timeout_seconds or self._core.tokens.idle_timeout_seconds
        if not timeout:
            return None
        warn = self._idle_warning_seconds
        if warn is None:
            warn = default_warning_seconds(timeout)
        return timeout, warn

    def _raise_for(self, response: httpx.Response) -> None:
        """Raise the typed error of a >= 400 answer.

        Only the session's own origins speak for the session: a refusal from a redirect's
        foreign target is a plain :class:`ApiError`, never "your session ended".
        """
        if response.status_code < 400:
            return
        if not self._origins.allows(response.request.url):
            status = response.status_code
            raise ApiError(f"http_{status} ({status}) from a redirect's target outside the "
                           "session's origins", status=status, code=f"http_{status}")
        raise error_from_response(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError as exc:
            raise ApiError("the server sent a body that is not JSON", code="bad_response",
                           status=response.status_code) from exc
        if not isinstance(doc, dict):
            raise ApiError("unexpected response shape", code="bad_response",
                           status=response.status_code)
        return doc

    # -- the retry plan ----------------------------------------------------------------------

    def _send_plan(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool,
        idempotent: bool | None = None,
        timeout: httpx.Timeout | None = None,
        total_timeout_seconds: float | None = None,
        max_retries: int | None = None,
        flush_pending: bool = True,
        sign_in: bool = False,
        **kwargs: Any,
    ) -> Plan[httpx.Response]:
        """Send with a total deadline; retry what is safe to retry; map every failure.

        Any call may be retried if it certainly never reached the server; otherwise only an
        idempotent one. A success on our origin also flushes pending revocations, unless
        the call is itself a revocation (``flush_pending=False``). ``sign_in`` (login)
        sends a DPoP proof, making the device key on first use; every retry signs anew.
        """
        url = self._url(path)
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        deadline = Deadline.after(total_timeout_seconds or self._total_timeout_seconds)
        retries = self._max_retries if max_retries is None else max_retries
        base_timeout = timeout or self._timeout
        auth: httpx.Auth | None = self._auth if authenticated else None
        if sign_in and not authenticated:
            auth = self._sign_in_auth
        attempt = 0
        while True:
            attempt += 1
            outcome = yield Send(
                method, url, attempt_timeout(base_timeout, deadline.remaining_seconds()),
                auth=auth, options=kwargs, deadline=deadline,
            )
            if isinstance(outcome, ClientClosedError):
                raise outcome
            if isinstance(outcome, httpx.TransportError):
                error = map_transport_error(outcome)
                if attempt > retries or not (safe or never_sent(outcome)):
                    raise error from outcome
                delay = backoff_delay_seconds(attempt)
                if delay >= deadline.remaining_seconds():
                    raise error from outcome
                yield Sleep(delay)
                continue
            response: httpx.Response = outcome
            if response.status_code in RETRY_STATUSES and safe and attempt <= retries:
                # Retry-After is a floor on 502/503/504 as on 429 (load balancers send it);
                # one that reaches past the deadline ends the call now instead of waiting.
                delay = backoff_delay_seconds(
                    attempt, retry_after_seconds=retry_after_seconds(response))
                if delay < deadline.remaining_seconds():
                    yield Sleep(delay)
                    continue
            if (flush_pending and response.status_code < 400 and self._core.pending
                    and self._is_own_origin(url)):
                yield from self._flush_plan()
            return response

    def _call_deadline(self) -> Deadline:
        """Start the total deadline of a call that is not a :meth:`_send_plan` (restore)."""
        return Deadline.after(self._total_timeout_seconds)

    def _call_plan(self, method: str, path: str, **kwargs: Any) -> Plan[httpx.Response]:
        """Send as :meth:`_send_plan` does, then raise the typed error of a >= 400 answer."""
        response = yield from self._send_plan(method, path, **kwargs)
        self._raise_for(response)
        return response

    def _accept(self, response: httpx.Response, event: EventName) -> SessionInfo:
        """Take a token response, restart the idle timer and return the new session."""
        received_at = self._core.clock()
        tokens = self._core.accept(self._json(response), received_at=received_at, event=event)
        self._restart_idle_timer()
        info = self._core.session_info(tokens)
        assert info is not None
        return info

    # -- logout and pending revocations ------------------------------------------------------

    def _logout_plan(self, reason: SignOutReason) -> Plan[LogoutResult]:
        """Record the revocation, wipe locally, always; then revoke on the server.

        The revocation is recorded as pending (in storage) before the wipe and the
        ``signed_out`` event, the first things the app can observe: whatever a listener
        does next (close the client, quit), the intent survives and the next client on the
        same storage sends it. Only the server's definite answer drops it.
        """
        refresh = self._core.wipe(reason, revoke_later=True)
        if refresh is None:
            return LogoutResult(server_confirmed=False, pending=False)
        confirmed = yield from self._revoke_plan(refresh)
        if confirmed is None:
            return LogoutResult(server_confirmed=False, pending=True)
        self._core.drop_pending(refresh)
        if confirmed and self._core.pending:
            yield from self._flush_plan()  # the server is back: send older ones too
        return LogoutResult(server_confirmed=confirmed, pending=False)

    def _forget_device_plan(self) -> Plan[LogoutResult]:
        """Log out as :meth:`_logout_plan` does, then delete the device's DPoP key.

        The revocation needs no proof (ending a session is the safe direction, API.md), so
        one still pending after this is sent without the key.
        """
        result = yield from self._logout_plan(SignOutReason.USER)
        if self._prover is not None:
            self._prover.key.delete()
        return result

    def _revoke_plan(self, refresh: str) -> Plan[bool | None]:
        """POST the refresh token to logout, briefly: see :func:`revocation_outcome`.

        ``None`` also when the client was closed: the revocation is then left to the
        next client.
        """
        try:
            response = yield from self._send_plan(
                "POST", "v1/auth/logout", authenticated=False, idempotent=True,
                json={"refresh_token": refresh}, timeout=LOGOUT_TIMEOUT,
                total_timeout_seconds=LOGOUT_TOTAL_TIMEOUT_SECONDS, max_retries=1,
                flush_pending=False,
            )
        except (NetworkError, ClientClosedError):
            return None
        return revocation_outcome(response)

    def _flush_plan(self) -> Plan[int]:
        """Retry logouts the server did not confirm; return how many are still pending."""
        if not self._flushing.acquire(blocking=False):
            return len(self._core.pending)  # already flushing (we were called from a send)
        try:
            for refresh in list(self._core.pending):
                if (yield from self._revoke_plan(refresh)) is not None:
                    self._core.drop_pending(refresh)
                    _log.info("pending revocation confirmed")
            return len(self._core.pending)
        finally:
            self._flushing.release()

    # -- account and session plans -----------------------------------------------------------

    def _register_plan(self, username: str, password: str) -> Plan[str]:
        response = yield from self._call_plan(
            "POST", "v1/auth/register", authenticated=False, idempotent=False,
            json={"username": username, "password": password},
        )
        return str(self._json(response)["user_id"])

    def _login_plan(self, username: str, password: str) -> Plan[SessionInfo]:
        response = yield from self._call_plan(
            "POST", "v1/auth/login", authenticated=False, idempotent=False, sign_in=True,
            json=self._login_body(username, password),
        )
        # A new server session replaces any local one; a stale stored token goes too.
        if self._core.signed_in:
            self._core.wipe(SignOutReason.USER)
        if not self._core.stay_signed_in:
            self._core.forget_stored()
        return self._accept(response, EventName.SIGNED_IN)

    def _restored(self) -> SessionInfo | None:
        """Finish ``restore()`` once the driver has refreshed: start the idle timer."""
        self._restart_idle_timer()
        return self._core.session_info()

    def _logout_all_plan(self, scope: Literal["all", "others"]) -> Plan[None]:
        yield from self._call_plan("POST", "v1/auth/logout-all", authenticated=True,
                                   idempotent=True, json={"scope": scope})
        if scope == "all":
            self._core.wipe(SignOutReason.USER)

    def _sessions_plan(self) -> Plan[list[RemoteSession]]:
        doc = self._json((yield from self._call_plan("GET", "v1/auth/sessions",
                                                     authenticated=True)))
        return [RemoteSession.from_json(entry) for entry in doc.get("sessions", [])]

    def _revoke_session_plan(self, session_id: str) -> Plan[None]:
        current = self._core.tokens.session_id
        yield from self._call_plan("DELETE", f"v1/auth/sessions/{session_id}",
                                   authenticated=True)
        if session_id == current:
            self._core.wipe(SignOutReason.USER)

    def _reauthenticate_plan(self, password: str) -> Plan[SessionInfo]:
        response = yield from self._call_plan("POST", "v1/auth/reauth", authenticated=True,
                                              idempotent=False, json={"password": password})
        return self._accept(response, EventName.SIGNED_IN)

    def _change_password_plan(self, current_password: str,
                              new_password: str) -> Plan[SessionInfo]:
        response = yield from self._call_plan(
            "POST", "v1/auth/password", authenticated=True, idempotent=False,
            json={"current_password": current_password, "new_password": new_password},
        )
        return self._accept(response, EventName.SIGNED_IN)

    # -- idle --------------------------------------------------------------------------------

    def touch(self) -> None:
        """Tell the SDK the user is active (call on taps/keys): resets the idle timer."""
        with self._idle_lock:
            if self._idle is not None:
                self._idle.touch()

    def idle_seconds_left(self) -> float | None:
        """Seconds until the idle sign-out, or ``None`` when no timer runs."""
        with self._idle_lock:
            return None if self._idle is None else self._idle.seconds_left()

    def _restart_idle_timer(self) -> None:
        settings = self._idle_settings()
        with self._idle_lock:
            if self._idle is not None:
                self._idle.stop()
                self._idle = None
            if settings is not None:
                self._idle = self._start_idle_timer(*settings)

    def _idle_warning(self, seconds_left: float) -> None:
        self._core.events.emit(AuthEvent(EventName.IDLE_WARNING, seconds_left=seconds_left))

    # -- pause and resume (M3) ---------------------------------------------------------------

    def _pause(self) -> None:
        """Go to the background: note when, hold the idle timer, write what waits.

        No network: the OS may freeze or kill the app at any moment after this returns,
        and every pending revocation is in storage by then (if the store is not locked).
        """
        self._core.pause()
        with self._idle_lock:
            if self._idle is not None:
                self._idle.pause()
        self._core.retry_storage()

    def _resume_step(self) -> Literal["idle", "check", "none"]:
        """Begin ``on_resume``: count the time away, retry storage, say what comes next.

        ``"idle"``: the idle limit passed while away, sign out (and revoke). ``"check"``:
        a session is held, make sure it is fresh before the first request. ``"none"``.
        """
        away = self._core.resume()
        self._core.retry_storage()
        if not self._core.signed_in:
            return "none"
        left = self.idle_seconds_left()
        if left is not None and left <= 0:
            _log.info("resumed after the idle limit (away %.0f s)", away)
            return "idle"
        with self._idle_lock:
            if self._idle is not None:
                self._idle.pause(False)
        return "check"

    @contextlib.contextmanager
    def _quietly(self, what: str) -> Iterator[None]:
        """Let a resume step fail without an exception: the app learns by events.

        Network loss never signs out (the session is kept and checked again on the next
        call); a session the server ended has already been wiped and announced.
        """
        try:
            yield
        except LatchkeyError as exc:
            _log.info("%s on resume did not complete (%s)", what, type(exc).__name__)

    def _resumed(self) -> SessionInfo | None:
        """End ``on_resume``: a session read from storage just now gets its idle timer."""
        if self._core.signed_in and self._idle is None and self._core.tokens.access_token:
            self._restart_idle_timer()
        return self._core.session_info()

    def _stop_idle_timer(self, _event: AuthEvent | None = None) -> None:
        """Stop the idle timer: on sign-out (an event handler) and on close."""
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()
