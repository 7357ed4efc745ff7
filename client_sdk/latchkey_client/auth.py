"""Attach the session to requests and keep it fresh: an ``httpx.Auth`` flow.

For each request to the session's own origin the flow:

1. refuses a URL with a token-like query parameter (S2);
2. ends the session locally if its absolute lifetime has passed, even offline (L6);
3. refreshes ahead of expiry, measured on the monotonic clock from ``expires_in`` (S3);
4. sends with ``Authorization: Bearer``; on one 401 ``token_expired`` refreshes once and
   resends; on ``session_expired``/``session_revoked`` wipes local tokens and tells the app.

Requests to any other origin go out untouched, without ``Authorization``.

The refresh is single-flight: a thread lock (or asyncio lock) plus a re-check after taking
it, then a lock file shared by processes using the same store plus a re-read of the stored
refresh token. With rotating refresh tokens two racing refreshes look like theft (L3), so
exactly one caller refreshes and the others use its result.

When a refresh's outcome is unknown (connection dropped or timed out after sending), the
*same* refresh token is replayed until ``refresh_replay_seconds`` is spent; inside the
server's grace window the server answers with the same successor, so the user stays signed
in instead of tripping reuse detection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from ._core import REFRESH_KEY, SessionCore, Tokens, problem_code
from ._locks import ProcessLock
from ._timing import Deadline, backoff_delay_seconds
from .errors import (
    ApiError,
    ConfigurationError,
    InvalidTokenError,
    NetworkError,
    NetworkTimeoutError,
    NotSignedInError,
    SessionEndedError,
    SessionExpiredError,
    SessionRevokedError,
    error_from_response,
)
from .events import EventName, SignOutReason
from .transport import check_request_url, same_origin

__all__ = ["DEFAULT_REFRESH_REPLAY_SECONDS", "LatchkeyAuth"]

_log = logging.getLogger("latchkey_client.auth")

#: How long to keep replaying a refresh whose outcome is unknown. Below the server's default
#: 30 s reuse grace window, so every replay lands inside it.
DEFAULT_REFRESH_REPLAY_SECONDS = 20.0

_SESSION_ENDING_CODES = frozenset({"session_expired", "session_revoked", "refresh_token_reused"})


def _map_transport_error(exc: httpx.TransportError) -> NetworkError:
    if isinstance(exc, httpx.TimeoutException):
        return NetworkTimeoutError(f"refresh timed out ({type(exc).__name__})")
    return NetworkError(f"refresh failed: {type(exc).__name__}")


class LatchkeyAuth(httpx.Auth):
    """Bearer auth with proactive, single-flight, replay-safe refresh.

    Get one from ``LatchkeyClient.auth``/``AsyncLatchkeyClient.auth`` and pass it to your own
    ``httpx.Client(auth=...)`` to call your API with the session attached; it only ever
    attaches the token to the Latchkey server's origin.
    """

    def __init__(
        self,
        core: SessionCore,
        *,
        origin: httpx.URL,
        refresh_url: httpx.URL,
        sync_http: httpx.Client | None = None,
        async_http: httpx.AsyncClient | None = None,
        refresh_timeout: httpx.Timeout,
        refresh_replay_seconds: float = DEFAULT_REFRESH_REPLAY_SECONDS,
        device_id: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        self._core = core
        self._origin = origin
        self._refresh_url = refresh_url
        self._sync_http = sync_http
        self._async_http = async_http
        self._refresh_timeout = refresh_timeout
        self._replay_seconds = refresh_replay_seconds
        self._device_id = device_id
        self._user_agent = user_agent
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        #: How many refresh requests this auth has sent (successful or not); for tests/metrics.
        self.refresh_requests = 0

    def __repr__(self) -> str:
        return f"LatchkeyAuth(origin={str(self._origin)!r}, signed_in={self._core.signed_in})"

    # -- the flows ---------------------------------------------------------------------------

    def _applies_to(self, request: httpx.Request) -> bool:
        check_request_url(request.url)
        return same_origin(request.url, self._origin)

    def _bind(self, request: httpx.Request) -> None:
        """Send the device id and User-Agent the session is bound to (D3), whoever's client
        carries the request: under the server's ``enforce`` binding policy a different
        User-Agent ends the session."""
        if self._device_id is not None:
            request.headers["X-Device-Id"] = self._device_id
        if self._user_agent is not None:
            request.headers["User-Agent"] = self._user_agent

    def _precheck(self) -> Tokens:
        tokens = self._core.tokens
        if tokens.refresh_token is None:
            raise NotSignedInError("not signed in")
        if self._core.absolute_expired(tokens):
            self._core.wipe(SignOutReason.ABSOLUTE)
            raise SessionExpiredError(
                "the session reached its absolute lifetime",
                reason="absolute", status=401, code="session_expired",
            )
        return tokens

    def _after_response(self, response: httpx.Response) -> str | None:
        """Return the 401 code (body read by the caller); end the session if it is over."""
        code = problem_code(response)
        if code in _SESSION_ENDING_CODES:
            error = error_from_response(response)
            assert isinstance(error, SessionEndedError)
            self._core.end_from_error(error)
        return code

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Send ``request`` with a fresh access token; refresh once on ``token_expired``."""
        if not self._applies_to(request):
            request.headers.pop("Authorization", None)
            yield request
            return
        tokens = self.ensure_fresh_sync()
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        self._bind(request)
        response = yield request
        if response.status_code != 401:
            return
        response.read()
        if self._after_response(response) != "token_expired":
            return
        tokens = self.ensure_fresh_sync(stale=tokens)
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        response = yield request
        if response.status_code == 401:
            response.read()
            self._after_response(response)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The asyncio twin of :meth:`sync_auth_flow`."""
        if not self._applies_to(request):
            request.headers.pop("Authorization", None)
            yield request
            return
        tokens = await self.ensure_fresh_async()
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        self._bind(request)
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        if self._after_response(response) != "token_expired":
            return
        tokens = await self.ensure_fresh_async(stale=tokens)
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            self._after_response(response)

    # -- single flight -----------------------------------------------------------------------

    def _needs_refresh(self, tokens: Tokens, stale: Tokens | None) -> bool:
        if stale is not None:
            # Forced (the server said token_expired): refresh unless someone already did.
            return tokens.generation == stale.generation
        return not self._core.access_fresh(tokens)

    def _process_lock(self) -> ProcessLock | None:
        path = self._core.storage.lock_path
        return ProcessLock(path) if (path is not None and self._core.stay_signed_in) else None

    def _token_to_present(self, tokens: Tokens) -> str:
        """Return the refresh token to send, re-reading the store other processes share."""
        if not self._core.stay_signed_in or self._core.storage.lock_path is None:
            assert tokens.refresh_token is not None
            return tokens.refresh_token
        stored = self._core.storage.load(REFRESH_KEY)
        if stored is None:
            # Another process of this app logged out: so are we.
            self._core.wipe(SignOutReason.REMOTE)
            raise SessionRevokedError(
                "signed out by another process", reason="logout", status=401,
                code="session_revoked",
            )
        if stored != tokens.refresh_token:
            _log.debug("another process rotated the refresh token; adopting it")
            self._core.adopt_refresh_token(stored)
        return stored

    def _fall_back(self, tokens: Tokens, stale: Tokens | None, error: NetworkError) -> Tokens:
        """Keep using a still-valid access token if a proactive refresh could not happen."""
        if stale is None and self._core.access_usable(tokens):
            _log.info("proactive refresh failed (%s); using current token", type(error).__name__)
            return tokens
        raise error

    def ensure_fresh_sync(self, stale: Tokens | None = None) -> Tokens:
        """Return tokens with a usable access token, refreshing at most once for everyone."""
        tokens = self._precheck()
        if not self._needs_refresh(tokens, stale):
            return tokens
        with self._thread_lock:
            tokens = self._precheck()
            if not self._needs_refresh(tokens, stale):
                return tokens  # another thread refreshed while we waited
            plock = self._process_lock()
            try:
                if plock is not None:
                    plock.acquire()
                present = self._token_to_present(tokens)
                doc, received_at = self._refresh_with_replay_sync(present)
                return self._core.accept(doc, received_at=received_at, event=EventName.REFRESHED)
            except NetworkError as exc:
                return self._fall_back(tokens, stale, exc)
            finally:
                if plock is not None:
                    plock.release()

    async def ensure_fresh_async(self, stale: Tokens | None = None) -> Tokens:
        """The asyncio twin of :meth:`ensure_fresh_sync`."""
        tokens = self._precheck()
        if not self._needs_refresh(tokens, stale):
            return tokens
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            tokens = self._precheck()
            if not self._needs_refresh(tokens, stale):
                return tokens
            plock = self._process_lock()
            try:
                if plock is not None:
                    await asyncio.to_thread(plock.acquire)
                present = self._token_to_present(tokens)
                doc, received_at = await self._refresh_with_replay_async(present)
                return self._core.accept(doc, received_at=received_at, event=EventName.REFRESHED)
            except NetworkError as exc:
                return self._fall_back(tokens, stale, exc)
            finally:
                if plock is not None:
                    plock.release()

    # -- the refresh call, replayed on unknown outcome ---------------------------------------

    def _attempt_timeout(self, deadline: Deadline) -> httpx.Timeout:
        t = self._refresh_timeout
        return httpx.Timeout(
            connect=max(0.05, deadline.clip(t.connect)), read=max(0.05, deadline.clip(t.read)),
            write=max(0.05, deadline.clip(t.write)), pool=max(0.05, deadline.clip(t.pool)),
        )

    def _handle_refresh_response(self, response: httpx.Response) -> dict[str, Any] | None:
        """Return the token document, ``None`` to retry, or raise the mapped error."""
        if response.status_code == 200:
            doc = response.json()
            if not isinstance(doc, dict):
                raise ApiError("malformed refresh response", code="bad_response", status=200)
            return doc
        error = error_from_response(response)
        if error.retryable:
            return None  # 429/5xx: nothing changed on the server; try the same token again
        if isinstance(error, SessionEndedError | InvalidTokenError):
            self._core.end_from_error(error)
        raise error

    def _refresh_with_replay_sync(self, refresh_token: str) -> tuple[dict[str, Any], float]:
        if self._sync_http is None:
            raise ConfigurationError("this LatchkeyAuth belongs to an AsyncLatchkeyClient")
        deadline = Deadline.after(self._replay_seconds)
        attempt = 0
        while True:
            attempt += 1
            self.refresh_requests += 1
            last: Exception
            try:
                response = self._sync_http.post(
                    self._refresh_url, json={"refresh_token": refresh_token},
                    timeout=self._attempt_timeout(deadline), auth=None,
                )
                received_at = self._core.clock()
                doc = self._handle_refresh_response(response)
                if doc is not None:
                    return doc, received_at
                last = error_from_response(response)
                delay = backoff_delay_seconds(attempt, retry_after_seconds=getattr(
                    last, "retry_after_seconds", None))
            except httpx.TransportError as exc:
                # Outcome unknown: the server may have rotated. Replay the same token.
                _log.info("refresh outcome unknown (%s); replaying", type(exc).__name__)
                last = _map_transport_error(exc)
                last.__cause__ = exc
                delay = backoff_delay_seconds(attempt)
            if deadline.remaining_seconds() <= delay:
                raise last
            time.sleep(delay)

    async def _refresh_with_replay_async(
        self, refresh_token: str
    ) -> tuple[dict[str, Any], float]:
        if self._async_http is None:
            raise ConfigurationError("this LatchkeyAuth belongs to a sync LatchkeyClient")
        deadline = Deadline.after(self._replay_seconds)
        attempt = 0
        while True:
            attempt += 1
            self.refresh_requests += 1
            last: Exception
            try:
                response = await self._async_http.post(
                    self._refresh_url, json={"refresh_token": refresh_token},
                    timeout=self._attempt_timeout(deadline), auth=None,
                )
                received_at = self._core.clock()
                doc = self._handle_refresh_response(response)
                if doc is not None:
                    return doc, received_at
                last = error_from_response(response)
                delay = backoff_delay_seconds(attempt, retry_after_seconds=getattr(
                    last, "retry_after_seconds", None))
            except httpx.TransportError as exc:
                _log.info("refresh outcome unknown (%s); replaying", type(exc).__name__)
                last = _map_transport_error(exc)
                last.__cause__ = exc
                delay = backoff_delay_seconds(attempt)
            if deadline.remaining_seconds() <= delay:
                raise last
            await asyncio.sleep(delay)
