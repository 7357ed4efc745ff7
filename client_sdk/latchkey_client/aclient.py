"""The asyncio client: the same API as :class:`LatchkeyClient`, with ``await``."""

from __future__ import annotations

import asyncio
import logging
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
from .idle import AsyncIdleTimer

__all__ = ["AsyncLatchkeyClient"]

_log = logging.getLogger("latchkey_client")


class AsyncLatchkeyClient(ClientBase):
    """Sign a user in, keep the session fresh, call your API with it, sign out: asyncio.

    Same keyword-only options, methods and events as :class:`LatchkeyClient`; the network
    methods are coroutines. Use one instance per event loop::

        async with AsyncLatchkeyClient(base_url="https://auth.example.com") as client:
            await client.login(username="ada", password="...")
            me = (await client.get("/v1/me")).json()
    """

    def _setup(self, transport: Any) -> None:
        self._http = httpx.AsyncClient(**self._http_options(transport))
        self._auth = LatchkeyAuth(
            self._core,
            origin=self._base_url,
            refresh_url=self._url("v1/auth/refresh"),
            async_http=self._http,
            refresh_timeout=self._timeout,
            refresh_replay_seconds=DEFAULT_REFRESH_REPLAY_SECONDS,
            device_id=self._device_id,
            user_agent=self._headers["User-Agent"],
        )
        self._idle: AsyncIdleTimer | None = None
        self._flushing = asyncio.Lock()
        self._core.events.on(EventName.SIGNED_OUT, self._on_signed_out)

    @property
    def auth(self) -> LatchkeyAuth:
        """The ``httpx.Auth`` to pass to your own ``httpx.Client`` for your API."""
        return self._auth

    # -- transport with deadline and retries -------------------------------------------------

    async def _send(
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
                response = await self._http.request(
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
                await asyncio.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES and safe and attempt <= retries:
                error = error_from_response(response)
                retry_after = (
                    error.retry_after_seconds if isinstance(error, RateLimitedError) else None
                )
                delay = backoff_delay_seconds(attempt, retry_after_seconds=retry_after)
                if delay < deadline.remaining_seconds():
                    await asyncio.sleep(delay)
                    continue
            if response.status_code < 400 and self._core.pending and self._is_own_origin(url):
                await self.flush_pending_revocations()
            return response

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._send(method, path, **kwargs)
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

    async def register(self, *, username: str, password: str) -> str:
        """Create an account; return its opaque user id. Does not sign in."""
        response = await self._call(
            "POST", "v1/auth/register", authenticated=False, idempotent=False,
            json={"username": username, "password": password},
        )
        return str(self._json(response)["user_id"])

    async def login(self, *, username: str, password: str) -> SessionInfo:
        """Sign in with a password; a new server session replaces any local one."""
        response = await self._call(
            "POST", "v1/auth/login", authenticated=False, idempotent=False,
            json=self._login_body(username, password),
        )
        if self._core.signed_in:
            self._core.wipe(SignOutReason.USER)
        if not self._core.stay_signed_in:
            self._core.storage.clear("refresh_token")
        return self._accept(response, EventName.SIGNED_IN)

    async def restore(self) -> SessionInfo | None:
        """Resume a stored session (``stay_signed_in=True``) now; ``None`` if there is none.

        Optional: the first authenticated call would refresh anyway.
        """
        if not self._core.signed_in:
            return None
        await self._auth.ensure_fresh_async()
        self._restart_idle_timer()
        return self._core.session_info()

    async def logout(self) -> LogoutResult:
        """End this session on the server and always wipe it here.

        The server call has a short timeout. If the server cannot be reached, the refresh
        token is kept in secure storage as a pending revocation and sent again after the
        next successful connection; the result says which happened.
        """
        return await self._logout(SignOutReason.USER)

    async def _logout(self, reason: SignOutReason) -> LogoutResult:
        refresh = self._core.wipe(reason)
        if refresh is None:
            return LogoutResult(server_confirmed=False, pending=False)
        confirmed = await self._revoke(refresh)
        if confirmed is None:
            self._core.add_pending(refresh)
            return LogoutResult(server_confirmed=False, pending=True)
        return LogoutResult(server_confirmed=confirmed, pending=False)

    async def _revoke(self, refresh: str) -> bool | None:
        """POST the refresh token to logout: True confirmed, False refused, None unreachable."""
        try:
            response = await self._send(
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

    async def flush_pending_revocations(self) -> int:
        """Retry logouts the server did not confirm; return how many are still pending."""
        if self._flushing.locked():
            return len(self._core.pending)  # already flushing (we were called from _send)
        async with self._flushing:
            for refresh in list(self._core.pending):
                if await self._revoke(refresh) is not None:
                    self._core.drop_pending(refresh)
                    _log.info("pending revocation confirmed")
            return len(self._core.pending)

    async def logout_all(self, *, scope: Literal["all", "others"] = "all") -> None:
        """End all the user's sessions (``"all"``, this one included) or all others."""
        await self._call("POST", "v1/auth/logout-all", authenticated=True, idempotent=True,
                   json={"scope": scope})
        if scope == "all":
            self._core.wipe(SignOutReason.USER)

    async def sessions(self) -> list[RemoteSession]:
        """List the user's live sessions (device, user agent, IP, times)."""
        doc = self._json(await self._call("GET", "v1/auth/sessions", authenticated=True))
        return [RemoteSession.from_json(entry) for entry in doc.get("sessions", [])]

    async def revoke_session(self, session_id: str) -> None:
        """End one of the user's sessions remotely (this one too, if it is the current)."""
        current = self._core.tokens.session_id
        await self._call("DELETE", f"v1/auth/sessions/{session_id}", authenticated=True)
        if session_id == current:
            self._core.wipe(SignOutReason.USER)

    async def reauthenticate(self, *, password: str) -> SessionInfo:
        """Step up: prove the password again for a sensitive action (new session id)."""
        response = await self._call("POST", "v1/auth/reauth", authenticated=True, idempotent=False,
                              json={"password": password})
        return self._accept(response, EventName.SIGNED_IN)

    async def change_password(self, *, current_password: str, new_password: str) -> SessionInfo:
        """Change the password; the server ends every other session and issues a new one."""
        response = await self._call(
            "POST", "v1/auth/password", authenticated=True, idempotent=False,
            json={"current_password": current_password, "new_password": new_password},
        )
        return self._accept(response, EventName.SIGNED_IN)

    # -- the app's own API -------------------------------------------------------------------

    async def request(self, method: str, path: str, *, idempotent: bool | None = None,
                **kwargs: Any) -> httpx.Response:
        """Call the app's API with the session attached; raise a typed error on >= 400.

        ``path`` is relative to ``base_url``. GET/PUT/DELETE/HEAD/OPTIONS are retried on
        failure; pass ``idempotent=True`` for a POST your API makes safe to repeat.
        """
        return await self._call(method, path, authenticated=True, idempotent=idempotent, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", path)``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", path)``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("PUT", path)``."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("DELETE", path)``."""
        return await self.request("DELETE", path, **kwargs)

    # -- idle --------------------------------------------------------------------------------

    def touch(self) -> None:
        """Tell the SDK the user is active (call on taps/keys): resets the idle timer."""
        if self._idle is not None:
            self._idle.touch()

    def idle_seconds_left(self) -> float | None:
        """Seconds until the idle sign-out, or ``None`` when no timer runs."""
        return None if self._idle is None else self._idle.seconds_left()

    def _restart_idle_timer(self) -> None:
        settings = self._idle_settings()
        if self._idle is not None:
            self._idle.stop()
            self._idle = None
        if settings is None:
            return
        timeout, warn = settings
        self._idle = AsyncIdleTimer(
            timeout_seconds=timeout, warn_before_seconds=warn, clock=self._core.clock,
            on_warning=self._idle_warning, on_expired=self._idle_expired,
        )

    def _idle_warning(self, seconds_left: float) -> None:
        self._core.events.emit(AuthEvent(EventName.IDLE_WARNING, seconds_left=seconds_left))

    async def _idle_expired(self) -> None:
        try:
            await self._logout(SignOutReason.IDLE)
        except LatchkeyError:
            _log.warning("idle sign-out could not reach the server; revocation pending")

    def _on_signed_out(self, _event: AuthEvent) -> None:
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close connections and stop the idle timer (the session stays valid)."""
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.stop()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLatchkeyClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
