"""The synchronous client: one object per signed-in user of the app.

Every decision of a call is a plan in :class:`~latchkey_client._base.ClientBase`; this class
drives the plans with blocking I/O and runs the idle timer on a thread.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import Any, Literal

import httpx

from ._base import ClientBase, RemoteSession
from ._core import LogoutResult
from ._steps import Plan, T, run_sync
from .errors import LatchkeyError, StorageLost
from .events import SessionInfo, SignOutReason
from .idle import IdleTimer

__all__ = ["LatchkeyClient"]

_log = logging.getLogger("latchkey_client")


class LatchkeyClient(ClientBase):
    """Sign a user in, keep the session fresh, call your API with it, and sign out.

    Every option is keyword-only::

        client = LatchkeyClient(base_url="https://auth.example.com",
                                api_origins=["https://api.example.com"],
                                storage=KeyringStorage(), stay_signed_in=True)
        client.login(username="ada", password="...")
        me = client.get("/v1/me").json()
        orders = client.get("https://api.example.com/orders").json()
        client.logout()

    Thread-safe: any number of threads may call it; a refresh happens once for all of them.
    See ``docs/SDK.md`` for the options, events and errors.
    """

    _http: httpx.Client

    def _open_http(self, options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(**options, event_hooks={"request": [self._strip_if_foreign]})

    def _run(self, plan: Plan[T]) -> T:
        self._core.retry_storage()  # a write a locked store deferred goes first, if it can
        try:
            return run_sync(plan, self._http)
        except StorageLost:
            # Signed out already (storage_lost); revoke the token it held while we can.
            with contextlib.suppress(LatchkeyError):
                run_sync(self._flush_plan(), self._http)
            raise

    # -- account and session ----------------------------------------------------------------

    def register(self, *, username: str, password: str) -> str:
        """Create an account; return its opaque user id. Does not sign in."""
        return self._run(self._register_plan(username, password))

    def login(self, *, username: str, password: str) -> SessionInfo:
        """Sign in with a password; a new server session replaces any local one."""
        return self._run(self._login_plan(username, password))

    def restore(self) -> SessionInfo | None:
        """Resume a stored session (``stay_signed_in=True``) now; ``None`` if there is none.

        Optional: the first authenticated call would refresh anyway.
        """
        self._core.retry_storage()  # a store locked at start-up may be open now
        if not self._core.signed_in:
            return None
        self._auth.ensure_fresh_sync(deadline=self._call_deadline())
        return self._restored()

    def logout(self) -> LogoutResult:
        """End this session on the server and always wipe it here.

        The server call has a short timeout. If the server cannot be reached, the refresh
        token is kept in secure storage as a pending revocation and sent again after the
        next successful connection; the result says which happened.
        """
        return self._run(self._logout_plan(SignOutReason.USER))

    def forget_device(self) -> LogoutResult:
        """Log out, then delete this installation's DPoP key: the next sign-in makes a
        new one. (``logout()`` keeps the key; docs/SDK.md "DPoP".)"""
        return self._run(self._forget_device_plan())

    def flush_pending_revocations(self) -> int:
        """Retry logouts the server did not confirm; return how many are still pending."""
        return self._run(self._flush_plan())

    def logout_all(self, *, scope: Literal["all", "others"] = "all") -> None:
        """End all the user's sessions (``"all"``, this one included) or all others."""
        self._run(self._logout_all_plan(scope))

    def sessions(self) -> list[RemoteSession]:
        """List the user's live sessions (device, user agent, IP, times)."""
        return self._run(self._sessions_plan())

    def revoke_session(self, session_id: str) -> None:
        """End one of the user's sessions remotely (this one too, if it is the current)."""
        self._run(self._revoke_session_plan(session_id))

    def reauthenticate(self, *, password: str) -> SessionInfo:
        """Step up: prove the password again for a sensitive action (new session id)."""
        return self._run(self._reauthenticate_plan(password))

    def change_password(self, *, current_password: str, new_password: str) -> SessionInfo:
        """Change the password; the server ends every other session and issues a new one."""
        return self._run(self._change_password_plan(current_password, new_password))

    # -- the app's own API -------------------------------------------------------------------

    def request(self, method: str, path: str, *, idempotent: bool | None = None,
                **kwargs: Any) -> httpx.Response:
        """Call the app's API with the session attached; raise a typed error on >= 400.

        ``path`` is relative to ``base_url``, or an absolute URL on one of ``api_origins``
        (any other origin raises ``InsecureRequestError`` before sending). GET/PUT/DELETE/
        HEAD/OPTIONS are retried on failure; pass ``idempotent=True`` for a POST your API
        makes safe to repeat.
        """
        return self._run(self._call_plan(method, path, authenticated=True,
                                         idempotent=idempotent, **kwargs))

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

    def _start_idle_timer(self, timeout_seconds: float,
                          warn_before_seconds: float) -> IdleTimer:
        return IdleTimer(
            timeout_seconds=timeout_seconds, warn_before_seconds=warn_before_seconds,
            clock=self._core.clock, on_warning=self._idle_warning, on_expired=self._idle_expired,
        )

    def _idle_expired(self) -> None:
        try:
            self._run(self._logout_plan(SignOutReason.IDLE))
        except LatchkeyError:
            _log.warning("idle sign-out could not reach the server; revocation pending")

    # -- lifecycle ---------------------------------------------------------------------------

    def on_pause(self) -> None:
        """Call from the app's ``on_pause``: hold the idle timer, persist what waits.

        No network and no waiting on it, so it returns at once; pending revocations are
        in secure storage when it does, in case the OS kills the paused app.
        """
        self._pause()

    def on_resume(self) -> SessionInfo | None:
        """Call from the app's ``on_resume`` (blocks: run it off the UI thread).

        Counts the time away, also asleep; signs out with reason ``idle`` (revoking on the
        server) if the idle limit passed meanwhile; otherwise refreshes now if the access
        token is due, so the first request goes out fresh; sends pending revocations.
        Never raises for the network: offline, the session is kept. Returns the session,
        or ``None`` when signed out.
        """
        step = self._resume_step()
        if step == "idle":
            self._idle_expired()
            return None
        if step == "check":
            with self._quietly("refresh"):
                self._auth.ensure_fresh_sync()
        if self._core.pending:
            with self._quietly("pending revocation"):
                run_sync(self._flush_plan(), self._http)
        return self._resumed()

    def close(self) -> None:
        """Close connections and stop the idle timer (the session stays valid)."""
        self._stop_idle_timer()
        self._http.close()

    def __enter__(self) -> LatchkeyClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
