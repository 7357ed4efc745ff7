"""Fixtures for the SDK tests: both clients, real servers, a lossy proxy in front.

Servers come from the shared ``tests/conftest.py`` fixtures (a real ``latchkey-server``
subprocess on a real redis-server). They are module-scoped here where a module needs one
configuration for all its tests, because starting a server costs about a second.

Every end-to-end test takes the ``sdk`` fixture, parametrised over the two clients: the
sync :class:`LatchkeyClient` and the asyncio :class:`AsyncLatchkeyClient`, the latter
through :class:`AsyncClientOnALoop`, so one test body proves a behaviour for both.

DPoP is on in these clients, as it is by default, except towards a :func:`proxy_to` proxy:
the proxy listens on another port than the server's ``LATCHKEY_ISSUER``, so a proof's
``htu`` names a URL the server (rightly) does not answer to, and those tests, about the
network, run bearer sessions. DPoP through a proxy runs where the server's issuer is the
proxy's URL (``test_e2e_dpop.py``, the chaos run). :func:`me_status` asks the server about
a bound token with a proof by the key of the test client that holds it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
from latchkey_client import AsyncLatchkeyClient, LatchkeyClient
from latchkey_client.dpop import build_proof
from latchkey_client.dpop_flow import DPoPProver

from tests.conftest import PASSWORD, Api, ServerProcess, unique_username

from .proxy import LoopbackProxy

__all__ = ["PASSWORD", "AsyncClientOnALoop", "Sdk", "SdkClient", "SyncClient", "make_user",
           "me_status"]


class SyncClient(LatchkeyClient):
    """The sync client, plus the two things a test does that differ by client kind."""

    kind = "sync"

    def refresh_now(self) -> None:
        """Rotate the refresh token now, as a ``token_expired`` answer would."""
        self.auth.ensure_fresh_sync(stale=self._core.tokens)

    def app_get(self, url: str, **options: Any) -> httpx.Response:
        """GET ``url`` through the app's own ``httpx.Client`` with ``auth=client.auth``."""
        with httpx.Client(auth=self.auth, **options) as http:
            return http.get(url)

    def close_from_listener(self) -> None:
        """Close the client from an event listener, as an app leaving its screen does."""
        self.close()


class AsyncClientOnALoop:
    """Drive an :class:`AsyncLatchkeyClient` from a synchronous test body.

    The client lives on its own event loop in a background thread, as an asyncio app's
    client lives on the app's loop. Every method call runs on that loop and the test waits
    for it, so coroutines are awaited and ``touch()`` runs on the loop's thread as the
    client requires; attributes and properties are read through. Test threads calling at
    once become concurrent tasks on the client's one loop.
    """

    kind = "async"

    def __init__(self, loop: asyncio.AbstractEventLoop, **options: Any) -> None:
        self._loop = loop
        self._client: AsyncLatchkeyClient = self._on_loop(AsyncLatchkeyClient, **options)

    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return functools.partial(self._on_loop, attr) if inspect.ismethod(attr) else attr

    def __repr__(self) -> str:
        return repr(self._client)

    def close(self) -> None:
        """Close the client, as ``await client.aclose()`` does."""
        self._on_loop(self._client.aclose)

    def __enter__(self) -> AsyncClientOnALoop:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def refresh_now(self) -> None:
        """Rotate the refresh token now, as a ``token_expired`` answer would."""
        self._on_loop(self._client.auth.ensure_fresh_async, stale=self._client._core.tokens)

    def close_from_listener(self) -> None:
        """Close the client from an event listener (which runs on the client's loop): a
        listener cannot await, so it schedules ``aclose()``, as an asyncio app does."""
        self._loop.create_task(self._client.aclose())

    def app_get(self, url: str, **options: Any) -> httpx.Response:
        """GET ``url`` through the app's own ``httpx.AsyncClient`` with ``auth=client.auth``."""

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(auth=self._client.auth, **options) as http:
                return await http.get(url)

        return self._on_loop(get)


SdkClient = SyncClient | AsyncClientOnALoop
#: The type of the ``sdk`` fixture: ``sdk(server_or_url, **options) -> SdkClient``.
Sdk = Callable[..., SdkClient]


@pytest.fixture(params=["sync", "async"])
def sdk(request: pytest.FixtureRequest) -> Iterator[Sdk]:
    """Make clients of one kind per run of the test: ``sdk(server_or_url, **options)``.

    ``idle_logout`` defaults to False here: only the idle tests want the timer, and they
    ask for it. Every client made is closed after the test, the async kind's loop stopped.
    """
    made: list[SdkClient] = []
    provers: list[DPoPProver] = []
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None

    def make(server_or_url: ServerProcess | LoopbackProxy | str, **options: Any) -> SdkClient:
        nonlocal loop, thread
        url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
        options.setdefault("idle_logout", False)
        if url in _PROXIED_URLS:
            options.setdefault("dpop", False)  # see the module docstring
        if request.param == "sync":
            client: SdkClient = SyncClient(base_url=url, **options)
        else:
            if loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sdk-test-loop",
                                          daemon=True)
                thread.start()
            client = AsyncClientOnALoop(loop, base_url=url, **options)
        made.append(client)
        if client._prover is not None:
            provers.append(client._prover)
            _PROVERS.append(client._prover)
        return client

    yield make
    for prover in provers:
        _PROVERS.remove(prover)
    for client in made:
        client.close()
    if loop is not None and thread is not None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def make_user(server: ServerProcess) -> str:
    """Register a fresh user on ``server`` and return the username."""
    api = Api(server.base_url)
    try:
        return api.register(unique_username("sdk"))
    finally:
        api.close()


#: The DPoP provers of the test's clients, so :func:`me_status` can prove a bound token.
_PROVERS: list[DPoPProver] = []
#: The URLs of :func:`proxy_to` proxies (see the module docstring).
_PROXIED_URLS: set[str] = set()


def _bound_to(access_token: str) -> str | None:
    """Return the ``cnf.jkt`` of an access token, if it is a DPoP-bound JWT."""
    try:
        part = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return None
    cnf = claims.get("cnf") if isinstance(claims, dict) else None
    return cnf.get("jkt") if isinstance(cnf, dict) else None


def me_status(server: ServerProcess, access_token: str | None) -> int:
    """Ask the server itself whether ``access_token`` is still accepted (its status).

    A DPoP-bound token goes as its holder would send it, with a fresh proof by the key of
    the test client that holds it, so a 401 means the session is over, not "no proof".
    """
    url = server.base_url + "/v1/me"
    headers = {"Authorization": f"Bearer {access_token}"}
    jkt = _bound_to(access_token) if access_token else None
    if jkt is not None and access_token is not None:
        prover = next((p for p in _PROVERS if p.thumbprint() == jkt), None)
        assert prover is not None, "a DPoP-bound token whose key no test client holds"
        signer = prover.key.signer(create=False)
        assert signer is not None
        headers = {"Authorization": f"DPoP {access_token}",
                   "DPoP": build_proof(signer, method="GET", url=httpx.URL(url),
                                       issued_at=int(time.time()), access_token=access_token)}
    return httpx.get(url, headers=headers).status_code


@pytest.fixture(scope="module")
def short_ttl_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose access tokens live 2 s and whose reuse grace is 5 s."""
    return module_server_factory(access_token_ttl=2, refresh_reuse_grace=5)


@pytest.fixture
def proxy_to(request: pytest.FixtureRequest) -> Iterator[Callable[..., LoopbackProxy]]:
    """Put a :class:`LoopbackProxy` in front of a server; stopped after the test."""
    proxies: list[LoopbackProxy] = []

    def make(server: ServerProcess, **kwargs: object) -> LoopbackProxy:
        proxy = LoopbackProxy(server.base_url, **kwargs).start()  # type: ignore[arg-type]
        proxies.append(proxy)
        _PROXIED_URLS.add(proxy.base_url)
        return proxy

    yield make
    for proxy in proxies:
        _PROXIED_URLS.discard(proxy.base_url)
        proxy.stop()


@pytest.fixture
def file_store_path(tmp_path: Path) -> Path:
    """Where an EncryptedFileStorage test keeps its file."""
    return tmp_path / "tokens.bin"
