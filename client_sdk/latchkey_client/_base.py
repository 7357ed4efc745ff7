"""Build what the sync and async clients share: options, URLs, request and error rules."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from . import __version__
from ._core import SessionCore
from .errors import (
    ApiError,
    ConfigurationError,
    NetworkError,
    NetworkTimeoutError,
    error_from_response,
)
from .events import AuthEvent, EventName, SessionInfo
from .storage.base import Storage
from .transport import check_base_url, check_request_url, pinned_ssl_context, same_origin

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


def map_transport_error(exc: httpx.TransportError) -> NetworkError:
    """Turn an httpx transport error into the SDK's network error (no URL, no headers)."""
    if isinstance(exc, httpx.TimeoutException):
        return NetworkTimeoutError(f"timed out talking to the server ({type(exc).__name__})")
    return NetworkError(f"could not talk to the server ({type(exc).__name__})")


def never_sent(exc: httpx.TransportError) -> bool:
    """Say whether the request certainly never reached the server (safe to retry any call)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def attempt_timeout(base: httpx.Timeout, remaining_seconds: float) -> httpx.Timeout:
    """Shorten each phase of ``base`` so the attempt ends within ``remaining_seconds``."""

    def clip(value: float | None) -> float:
        return max(0.05, remaining_seconds if value is None else min(value, remaining_seconds))

    return httpx.Timeout(
        connect=clip(base.connect), read=clip(base.read), write=clip(base.write),
        pool=clip(base.pool),
    )


class ClientBase:
    """Options and rules common to :class:`LatchkeyClient` and :class:`AsyncLatchkeyClient`."""

    def __init__(
        self,
        *,
        base_url: str,
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
    ) -> None:
        self._base_url = check_base_url(base_url)
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
        )
        self._setup(transport)

    def _setup(self, transport: Any) -> None:
        """Create the HTTP client and the auth flow (sync or async)."""
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

    def on(
        self, event: EventName | str, callback: Callable[[AuthEvent], None]
    ) -> Callable[[], None]:
        """Subscribe to ``signed_in``, ``refreshed``, ``signed_out`` or ``idle_warning``.

        Returns a function that unsubscribes.
        """
        return self._core.events.on(event, callback)

    # -- request building --------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        url = self._base_url.join(path.lstrip("/")) if "://" not in path else httpx.URL(path)
        check_request_url(url)
        return url

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
            from .idle import default_warning_seconds

            warn = default_warning_seconds(timeout)
        return timeout, warn

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code >= 400:
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
