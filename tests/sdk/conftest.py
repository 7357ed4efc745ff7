"""Fixtures for the SDK tests: real servers with chosen settings, a lossy proxy in front.

Servers come from the shared ``tests/conftest.py`` helpers (a real ``latchkey-server``
subprocess on a real redis-server). They are module-scoped here where a module needs one
configuration for all its tests, because starting a server costs about a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Api, ServerProcess, unique_username

from .proxy import LoopbackProxy

__all__ = ["PASSWORD", "make_user"]


def make_user(server: ServerProcess) -> str:
    """Register a fresh user on ``server`` and return the username."""
    api = Api(server.base_url)
    try:
        return api.register(unique_username("sdk"))
    finally:
        api.close()


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
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def file_store_path(tmp_path: Path) -> Path:
    """Where an EncryptedFileStorage test keeps its file."""
    return tmp_path / "tokens.bin"
