"""The asyncio client: the same API as :class:`LatchkeyClient`, with ``await``.

It drives the same plans as the sync client (:class:`~latchkey_client._base.ClientBase`)
with ``await`` and runs the idle timer as a task; nothing else differs.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import Any, Literal

import httpx

from ._base import ClientBase, RemoteSession
from ._core import LogoutResult
from ._steps import Plan, T, run_async
from .errors import LatchkeyError, StorageLost
from .events import SessionInfo, SignOutReason
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

    _http: httpx.AsyncClient

    def _open_http(self, options: dict[str, Any]) -> httpx.AsyncClient:
        async def strip_if_foreign(request: httpx.Request) -> None:
            self._strip_if_foreign(request)

        return httpx.AsyncClient(**options, event_hooks={"request": [strip_if_foreign]})

    async def _run(self, plan: Plan[T]) -> T:
        self._core.retry_storage()  # a write a locked store deferred goes first, if it can
        try:
            return await run_async(plan, self._http)
        except StorageLost:
            # Signed out already (storage_lost); revoke the token it held while we can.
            with contextlib.suppress(LatchkeyError):
                await run_async(self._flush_plan(), self._http)
            raise

    # -- account and session ----------------------------------------------------------------

    async def register(self, *, username: str, password: str) -> str:
        """Create an account; return its opaque user id. Does not sign in."""
        return await self._run(self._register_plan(username, password))

    async def login(self, *, username: str, password: str) -> SessionInfo:
        """Sign in with a password; a new server session replaces any local one."""
        return await self._run(self._login_plan(username, password))

    async def restore(self) -> SessionInfo | None:
        """Resume a stored session (``stay_signed_in=True``) now; ``None`` if there is none."""
        self._core.retry_storage()  # a store locked at start-up may be open now
        if not self._core.signed_in:
            return None
        await self._auth.ensure_fresh_async(deadline=self._call_deadline())
        return self._restored()

    async def logout(self) -> LogoutResult:
        """End this session on the server and always wipe it here (see ``LatchkeyClient``)."""
        return await self._run(self._logout_plan(SignOutReason.USER))

    async def forget_device(self) -> LogoutResult:
        """Log out, then delete the DPoP key (see ``LatchkeyClient.forget_device``)."""
        return await self._run(self._forget_device_plan())

    async def flush_pending_revocations(self) -> int:
        """Retry logouts the server did not confirm; return how many are still pending."""
        return await self._run(self._flush_plan())

    async def logout_all(self, *, scope: Literal["all", "others"] = "all") -> None:
        """End all the user's sessions (``"all"``, this one included) or all others."""
        await self._run(self._logout_all_plan(scope))

    async def sessions(self) -> list[RemoteSession]:
        """List the user's live sessions (device, user agent, IP, times)."""
        return await self._run(self._sessions_plan())

    async def revoke_session(self, session_id: str) -> None:
        """End one of the user's sessions remotely (this one too, if it is the current)."""
        await self._run(self._revoke_session_plan(session_id))

    async def reauthenticate(self, *, password: str) -> SessionInfo:
        """Step up: prove the password again for a sensitive action (new session id)."""
        return await self._run(self._reauthenticate_plan(password))

    async def change_password(self, *, current_password: str,
                              new_password: str) -> SessionInfo:
        """Change the password; the server ends every other session and issues a new one."""
        return await self._run(self._change_password_plan(current_password, new_password))

    # -- the app's own API -------------------------------------------------------------------

    async def request(self, method: str, path: str, *, idempotent: bool | None = None,
                      **kwargs: Any) -> httpx.Response:
        """Call the app's API with the session attached; raise a typed error on >= 400.

        ``path`` is relative to ``base_url`` or an absolute URL on one of ``api_origins``.
        """
        return await self._run(self._call_plan(method, path, authenticated=True,
                                               idempotent=idempotent, **kwargs))

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``await request("GET", path)``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """``await request("POST", path)``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """``await request("PUT", path)``."""
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """``await request("DELETE", path)``."""
        return await self.request("DELETE", path, **kwargs)

    # -- idle --------------------------------------------------------------------------------

    def _start_idle_timer(self, timeout_seconds: float,
                          warn_before_seconds: float) -> AsyncIdleTimer:
        return AsyncIdleTimer(
            timeout_seconds=timeout_seconds, warn_before_seconds=warn_before_seconds,
            clock=self._core.clock, on_warning=self._idle_warning, on_expired=self._idle_expired,
        )

    async def _idle_expired(self) -> None:
        try:
            await self._run(self._logout_plan(SignOutReason.IDLE))
        except LatchkeyError:
            _log.warning("idle sign-out could not reach the server; revocation pending")

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_pause(self) -> None:
        """Call when the app goes to the background (see ``LatchkeyClient.on_pause``)."""
        self._pause()

    async def on_resume(self) -> SessionInfo | None:
        """Call when the app comes back (see ``LatchkeyClient.on_resume``)."""
        step = self._resume_step()
        if step == "idle":
            await self._idle_expired()
            return None
        if step == "check":
            with self._quietly("refresh"):
                await self._auth.ensure_fresh_async()
        if self._core.pending:
            with self._quietly("pending revocation"):
                await run_async(self._flush_plan(), self._http)
        return self._resumed()

    async def aclose(self) -> None:
        """Close connections and stop the idle timer (the session stays valid)."""
        self._stop_idle_timer()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLatchkeyClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
