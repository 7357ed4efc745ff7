"""The synchronous client: one object per signed-in user of the app."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, Literal

import httpx

from ._base import (
    IDEMPOTENT_METHODS,
    LOGOUT_TIMEOUT,
    LOGOUT_TOTAL_TIMEOUT_SECONDS,
    RETRY_STATUSES,
    ClientBase,
    RemoteSession,
    attempt_timeout,
    map_transport_error,
    never_sent,
)
from ._core import LogoutResult
from ._timing import Deadline, backoff_delay_seconds
from .auth import DEFAULT_REFRESH_REPLAY_SECONDS, LatchkeyAuth
from .errors import LatchkeyError, NetworkError, RateLimitedError, error_from_response
from .events import AuthEvent, EventName, SessionInfo, SignOutReason
from .idle import IdleTimer

__all__ = ["LatchkeyClient"]

_log = logging.getLogger("latchkey_client")


class LatchkeyClient(ClientBase):
    """Sign a user in, keep the session fresh, call your API with it, and sign out.

    Every option is keyword-only::

        client = LatchkeyClient(base_url="https://auth.example.com",
                                storage=KeyringStorage(), stay_signed_in=True)
        client.login(username="ada", password="...")
        me = client.get("/v1/me").json()
        client.logout()

    Thread-safe: any number of threads may call it; a refresh happens once for all of them.
    See ``docs/SDK.md`` for the options, events and errors.
    """

    def _setup(self, transport: Any) -> None:
        self._http = httpx.Client(**self._http_options(transport))
        self._auth = LatchkeyAuth(
            self._core,
            origin=self._base_url,
            refresh_url=self._url("v1/auth/refresh"),
            sync_http=self._http,
            refresh_timeout=self._timeout,
            refresh_replay_seconds=DEFAULT_REFRESH_REPLAY_SECONDS,
            device_id=self._device_id,
            user_agent=self._headers["User-Agent"],
        )
        self._idle: IdleTimer | None = None
        self._idle_lock = threading.Lock()
        self._flushing = threading.Lock()
        self._core.events.on(EventName.SIGNED_OUT, self._on_signed_out)

    @property
    def auth(self) -> LatchkeyAuth:
        """The ``httpx.Auth`` to pass to your own ``httpx.Client`` for your API."""
        return self._auth

    # -- transport with deadline and retries -------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        authenticated: bool,
        idempotent: bool | None = None,
        timeout: httpx.Timeout | None = None,
        total_timeout_seconds: float | None = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with a total deadline; retry what is safe to retry; map every failure."""
        url = self._url(path)
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        deadline = Deadline.after(total_timeout_seconds or self._total_timeout_seconds)
        retries = self._max_retries if max_retries is None else max_retries
        base_timeout = timeout or self._timeout
        auth = self._auth if authenticated else None
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method, url, auth=auth,
                    timeout=attempt_timeout(base_timeout, deadline.remaining_seconds()),
                    **kwargs,
                )
            except httpx.TransportError as exc:
                error = map_transport_error(exc)
                if attempt > retries or not (safe or never_sent(exc)):
                    raise error from exc
                delay = backoff_delay_seconds(attempt)
                if delay >= deadline.remaining_seconds():
                    raise error from exc
                time.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES and safe and attempt <= retries:
                error = error_from_response(response)
                retry_after = (
                    error.retry_after_seconds if isinstance(error, RateLimitedError) else None
                )
                delay = backoff_delay_seconds(attempt, retry_after_seconds=retry_after)
                if delay < deadline.remaining_seconds():
                    time.sleep(delay)
                    continue
            if response.status_code < 400 and self._core.pending and self._is_own_origin(url):
                self.flush_pending_revocations()
            return response

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        self._raise_for(response)
        return response

    def _accept(self, response: httpx.Response, event: EventName) -> SessionInfo:
        received_at = self._core.clock()
        tokens = self._core.accept(self._json(response), received_at=received_at, event=event)
        self._restart_idle_timer()
        info = self._core.session_info(tokens)
        assert info is not None
        return info

    # -- account and session ----------------------------------------------------------------

    def register(self, *, username: str, password: str) -> str:
        """Create an account; return its opaque user id. Does not sign in."""
        response = self._call(
            "POST", "v1/auth/register", authenticated=False, idempotent=False,
            json={"username": username, "password": password},
        )
        return str(self._json(response)["user_id"])

    def login(self, *, username: str, password: str) -> SessionInfo:
        """Sign in with a password; a new server session replaces any local one."""
        response = self._call(
            "POST", "v1/auth/login", authenticated=False, idempotent=False,
            json=self._login_body(username, password),
        )
        if self._core.signed_in:
            self._core.wipe(SignOutReason.USER)
        if not self._core.stay_signed_in:
            self._core.storage.clear("refresh_token")
        return self._accept(response, EventName.SIGNED_IN)

    def restore(self) -> SessionInfo | None:
        """Resume a stored session (``stay_signed_in=True``) now; ``None`` if there is none.

        Optional: the first authenticated call would refresh anyway.
        """
        if not self._core.signed_in:
            return None
        self._auth.ensure_fresh_sync()
        self._restart_idle_timer()
        return self._core.session_info()

    def logout(self) -> LogoutResult:
        """End this session on the server and always wipe it here.

        The server call has a short timeout. If the server cannot be reached, the refresh
        token is kept in secure storage as a pending revocation and sent again after the
        next successful connection; the result says which happened.
        """
        return self._logout(SignOutReason.USER)

    def _logout(self, reason: SignOutReason) -> LogoutResult:
        refresh = self._core.wipe(reason)
        if refresh is None:
            return LogoutResult(server_confirmed=False, pending=False)
        confirmed = self._revoke(refresh)
        if confirmed is None:
            self._core.add_pending(refresh)
            return LogoutResult(server_confirmed=False, pending=True)
        return LogoutResult(server_confirmed=confirmed, pending=False)

    def _revoke(self, refresh: str) -> bool | None:
        """POST the refresh token to logout: True confirmed, False refused, None unreachable."""
        try:
            response = self._send(
                "POST", "v1/auth/logout", authenticated=False, idempotent=True,
                json={"refresh_token": refresh}, timeout=LOGOUT_TIMEOUT,
                total_timeout_seconds=LOGOUT_TOTAL_TIMEOUT_SECONDS, max_retries=1,
            )
        except NetworkError:
            return None
        if response.status_code == 204 or response.status_code < 300:
            return True
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            return None
        return False  # a 4xx other than 429: the server will never accept this token

    def flush_pending_revocations(self) -> int:
        """Retry logouts the server did not confirm; return how many are still pending."""
        if not self._flushing.acquire(blocking=False):
            return len(self._core.pending)  # already flushing (we were called from _send)
        try:
            for refresh in list(self._core.pending):
                if self._revoke(refresh) is not None:
                    self._core.drop_pending(refresh)
                    _log.info("pending revocation confirmed")
            return len(self._core.pending)
        finally:
            self._flushing.release()

    def logout_all(self, *, scope: Literal["all", "others"] = "all") -> None:
        """End all the user's sessions (``"all"``, this one included) or all others."""
        self._call("POST", "v1/auth/logout-all", authenticated=True, idempotent=True,
                   json={"scope": scope})
        if scope == "all":
            self._core.wipe(SignOutReason.USER)

    def sessions(self) -> list[RemoteSession]:
        """List the user's live sessions (device, user agent, IP, times)."""
        doc = self._json(self._call("GET", "v1/auth/sessions", authenticated=True))
        return [RemoteSession.from_json(entry) for entry in doc.get("sessions", [])]

    def revoke_session(self, session_id: str) -> None:
        """End one of the user's sessions remotely (this one too, if it is the current)."""
        current = self._core.tokens.session_id
        self._call("DELETE", f"v1/auth/sessions/{session_id}", authenticated=True)
        if session_id == current:
            self._core.wipe(SignOutReason.USER)

    def reauthenticate(self, *, password: str) -> SessionInfo:
        """Step up: prove the password again for a sensitive action (new session id)."""
        response = self._call("POST", "v1/auth/reauth", authenticated=True, idempotent=False,
                              json={"password": password})
        return self._accept(response, EventName.SIGNED_IN)

    def change_password(self, *, current_password: str, new_password: str) -> SessionInfo:
        """Change the password; the server ends every other session and issues a new one."""
        response = self._call(
            "POST", "v1/auth/password", authenticated=True, idempotent=False,
            json={"current_password": current_password, "new_password": new_password},
        )
        return self._accept(response, EventName.SIGNED_IN)

    # -- the app's own API -------------------------------------------------------------------

    def request(self, method: str, path: str, *, idempotent: bool | None = None,
                **kwargs: Any) -> httpx.Response:
        """Call the app's API with the session attached; raise a typed error on >= 400.

        ``path`` is relative to ``base_url``. GET/PUT/DELETE/HEAD/OPTIONS are retried on
        failure; pass ``idempotent=True`` for a POST your API makes safe to repeat.
        """
        return self._call(method, path, authenticated=True, idempotent=idempotent, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", path)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", path)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("PUT", path)``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("DELETE", path)``."""
        return self.request("DELETE", path, **kwargs)

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
            if settings is None:
                return
            timeout, warn = settings
            self._idle = IdleTimer(
                timeout_seconds=timeout, warn_before_seconds=warn, clock=self._core.clock,
                on_warning=self._idle_warning, on_expired=self._idle_expired,
            )

    def _idle_warning(self, seconds_left: float) -> None:
        self._core.events.emit(AuthEvent(EventName.IDLE_WARNING, seconds_left=seconds_left))

    def _idle_expired(self) -> None:
        try:
            self._logout(SignOutReason.IDLE)
        except LatchkeyError:
            _log.warning("idle sign-out could not reach the server; revocation pending")

    def _on_signed_out(self, _event: AuthEvent) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close connections and stop the idle timer (the session stays valid)."""
        with self._idle_lock:
            idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()
        self._http.close()

    def __enter__(self) -> LatchkeyClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
