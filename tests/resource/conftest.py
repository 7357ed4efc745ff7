"""Fixtures for the resource-server tests: a Latchkey deployment of the test's own.

Each deployment is a real redis-server of its own and a real ``latchkey-server`` on
loopback against it, so the session policy the server publishes (``lk:{policy}``) is the
one its tests set, whatever other modules' servers publish to the shared store. A
``ResourceVerifier`` is built against it exactly as a backend would build one: the issuer
URL and the Redis URL, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from latchkey_resource import ResourceVerifier

from tests.conftest import Api, RedisProcess, ServerProcess

# What the app sends: the values its session is bound to (device id at login, User-Agent).
APP_UA = "LatchkeyDemo/1.4 (Android 14)"
DEVICE = "device-7f3a9c21"


@dataclass
class Deployment:
    """One Latchkey server and its own Redis, and what a backend needs to verify."""

    redis: RedisProcess
    server: ServerProcess
    verifiers: list[ResourceVerifier] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return self.server.base_url

    def api(self) -> Api:
        """An API helper sending the app's User-Agent."""
        api = Api(self.server.base_url)
        api.http.headers["User-Agent"] = APP_UA
        return api

    def sign_in(self, **extra: Any) -> dict[str, Any]:
        """Register a user and sign in from the app's device; return the token response."""
        api = self.api()
        try:
            username, tokens = api.new_user_session(device_id=DEVICE, **extra)
        finally:
            api.close()
        return {**tokens, "username": username}

    def verifier(self, **options: Any) -> ResourceVerifier:
        """A verifier as a backend builds it (closed at the end of the module)."""
        verifier = ResourceVerifier(self.issuer, self.redis.url, **options)
        self.verifiers.append(verifier)
        return verifier


def app_headers(access_token: str | None = None, **extra: str) -> dict[str, str]:
    """The headers of an app's request to a backend (its device id and user agent)."""
    headers = {"User-Agent": APP_UA, "X-Device-Id": DEVICE, **extra}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    return headers


def bearer(access_token: str) -> str:
    return f"Bearer {access_token}"


def bearer_to(server: ServerProcess, method: str, path: str, access_token: str,
              **kwargs: Any) -> httpx.Response:
    """Call the Latchkey server as the app, with the access token."""
    with httpx.Client(base_url=server.base_url, timeout=15) as c:
        return c.request(method, path, headers=app_headers(access_token), **kwargs)


@pytest.fixture(scope="module")
def deployment_factory(module_redis_factory: Callable[..., RedisProcess],
                       module_server_factory: Callable[..., ServerProcess],
                       ) -> Iterator[Callable[..., Deployment]]:
    """Start Latchkey deployments (``LATCHKEY_*`` keyword settings), each on its own Redis."""
    started: list[Deployment] = []

    def factory(**settings: Any) -> Deployment:
        redis = module_redis_factory()
        server = module_server_factory(store_url=redis.url, **settings)
        started.append(Deployment(redis, server))
        return started[-1]

    yield factory
    for deployment in started:
        for verifier in deployment.verifiers:
            verifier.close()


@pytest.fixture(scope="module")
def deployment(deployment_factory: Callable[..., Deployment]) -> Deployment:
    """A deployment with the default settings (binding policy ``report``)."""
    return deployment_factory()
