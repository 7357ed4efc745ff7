"""R1 end to end: a backend team's example API refuses a session ended anywhere on the very
next request, and the SDK (``api_origins``, R4) turns each refusal into its typed error.

Each test runs against both examples, each under its real server: Flask under gunicorn
(two workers) and FastAPI under uvicorn, next to a real Latchkey server and redis-server
(``conftest.py``). The app side is the real SDK: it signs in at Latchkey and calls the
example with the access token because the app names the example's origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from latchkey_client import (
    AsyncLatchkeyClient,
    EventName,
    InvalidTokenError,
    LatchkeyClient,
    SessionRevokedError,
    SignOutReason,
)

from tests.conftest import PASSWORD, Api

from .conftest import APP_SPECS, EXAMPLES, HEALTHZ, HELLO, Deployment, Deployments


@pytest.fixture(scope="module")
def main(deployments: Deployments) -> Deployment:
    """Default settings but 2 s access tokens, so ``token_expired`` is quick to reach."""
    return deployments(workers=2, access_token_ttl=2)


@pytest.fixture(scope="module")
def elsewhere(deployments: Deployments) -> Deployment:
    """Another Latchkey deployment: its own keys, its own store, no example of its own."""
    return deployments(kinds=())


@pytest.fixture
def client_of(main: Deployment) -> Iterator[Any]:
    made: list[LatchkeyClient] = []

    def make(kind: str, deployment: Deployment = main, **options: Any
             ) -> tuple[LatchkeyClient, str]:
        client, username = deployment.signed_in(kind, **options)
        made.append(client)
        return client, username

    yield make
    for client in made:
        client.close()


def other_session(deployment: Deployment, username: str) -> tuple[Api, dict[str, str]]:
    """The same user signed in on another device: an API helper and its bearer header."""
    api = Api(deployment.server.base_url)
    tokens = api.login(username, PASSWORD, device_id="laptop-2")
    return api, {"Authorization": f"Bearer {tokens['access_token']}", "X-Device-Id": "laptop-2"}


def latchkeys_own_answer(deployment: Deployment, access_token: str) -> dict[str, Any]:
    """What Latchkey's own ``/v1/me`` says about a plain bearer token: the codes must agree.

    The witness is a session of its own, ended the same way as the app's: the app's token
    may be bound to its device key (DPoP) and is the SDK's to present, not the test's."""
    r = httpx.get(deployment.server.base_url + "/v1/me", timeout=10,
                  headers={"Authorization": f"Bearer {access_token}"})
    assert r.status_code == 401, r.text
    return dict(r.json())


def test_a_live_session_calls_the_example_and_the_open_endpoint_needs_none(
    kind: str, main: Deployment, client_of: Any
) -> None:
    client, username = client_of(kind)
    r = client.get(main.examples[kind].url(HELLO))
    assert r.status_code == 200
    doc = r.json()
    assert client.session is not None
    assert doc["session_id"] == client.session.session_id
    assert doc["message"] == f"Hello, {username}: your session is live."
    assert doc["served_by"] == f"{kind}-example"
    assert httpx.get(main.examples[kind].url(HEALTHZ)).json() == {"status": "ok"}


def test_a_request_without_a_token_gets_the_rfc_6750_challenge(kind: str, main: Deployment
                                                              ) -> None:
    r = httpx.get(main.examples[kind].url(HELLO))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "invalid_token"


def test_signing_this_device_out_from_another_session_is_refused_on_the_very_next_call(
    kind: str, main: Deployment, client_of: Any
) -> None:
    client, username = client_of(kind)
    ended: list[Any] = []
    client.on(EventName.SIGNED_OUT, ended.append)
    assert client.get(main.examples[kind].url(HELLO)).status_code == 200
    assert client.session is not None
    api, other = other_session(main, username)
    try:
        witness = api.login(username, PASSWORD, device_id="tablet-3")
        for session_id in (client.session.session_id, witness["session_id"]):
            r = api.http.delete(f"/v1/auth/sessions/{session_id}", headers=other)
            assert r.status_code in (200, 204), r.text
    finally:
        api.close()
    with pytest.raises(SessionRevokedError) as caught:
        client.get(main.examples[kind].url(HELLO))
    latchkey = latchkeys_own_answer(main, witness["access_token"])
    assert (caught.value.code, caught.value.reason) == (latchkey["code"], latchkey.get("reason"))
    assert not client.is_signed_in
    assert [e.reason for e in ended] == [client.signed_out_reason]


def test_logout_all_from_another_session_is_refused_on_the_very_next_call(
    kind: str, main: Deployment, client_of: Any
) -> None:
    client, username = client_of(kind)
    assert client.get(main.examples[kind].url(HELLO)).status_code == 200
    api, other = other_session(main, username)
    try:
        r = api.http.post("/v1/auth/logout-all", json={"scope": "all"}, headers=other)
        assert r.status_code in (200, 204), r.text
    finally:
        api.close()
    with pytest.raises(SessionRevokedError):
        client.get(main.examples[kind].url(HELLO))
    assert not client.is_signed_in


def test_a_password_change_elsewhere_is_refused_on_the_very_next_call(
    kind: str, main: Deployment, client_of: Any
) -> None:
    client, username = client_of(kind)
    assert client.get(main.examples[kind].url(HELLO)).status_code == 200
    api, other = other_session(main, username)
    try:
        r = api.http.post("/v1/auth/password", headers=other, json={
            "current_password": PASSWORD, "new_password": PASSWORD + "-changed"})
        assert r.status_code == 200, r.text
    finally:
        api.close()
    with pytest.raises(SessionRevokedError):
        client.get(main.examples[kind].url(HELLO))
    assert client.signed_out_reason is SignOutReason.PASSWORD_CHANGE


def test_the_examples_token_expired_refreshes_once_and_the_call_succeeds(
    kind: str, main: Deployment, client_of: Any
) -> None:
    frozen = time.monotonic()
    # A client whose clock stands still believes its token is fresh: only the example's
    # 401 token_expired can tell it otherwise.
    client, _ = client_of(kind, clock=lambda: frozen)
    before = client.session
    time.sleep(2.2)
    r = client.get(main.examples[kind].url(HELLO))
    assert r.status_code == 200
    assert client.auth.refresh_requests == 1
    assert before is not None and r.json()["session_id"] == before.session_id


def test_a_token_of_another_deployment_is_invalid_token_and_ends_nothing(
    kind: str, main: Deployment, elsewhere: Deployment
) -> None:
    username = elsewhere.new_user()
    # An app of the other deployment that (wrongly) names this deployment's example.
    with LatchkeyClient(base_url=elsewhere.server.base_url, idle_logout=False,
                        api_origins=[main.examples[kind].base_url]) as client:
        client.login(username=username, password=PASSWORD)
        with pytest.raises(InvalidTokenError) as caught:
            client.get(main.examples[kind].url(HELLO))
        assert caught.value.code == "invalid_token"
        # One refresh (RFC 6750: the client may retry with a new token), then the answer.
        assert client.auth.refresh_requests == 1
        assert client.is_signed_in  # its own session at its own deployment is fine
        assert client.get("/v1/me").status_code == 200


def test_the_async_client_calls_the_example_too(kind: str, main: Deployment) -> None:
    username = main.new_user()

    async def call() -> dict[str, Any]:
        async with AsyncLatchkeyClient(base_url=main.server.base_url, idle_logout=False,
                                       api_origins=[main.examples[kind].base_url]) as client:
            await client.login(username=username, password=PASSWORD)
            doc = (await client.get(main.examples[kind].url(HELLO))).json()
            await client.logout()
            return dict(doc)

    assert asyncio.run(call())["message"] == f"Hello, {username}: your session is live."


def test_each_readme_runs_the_example_the_way_these_tests_do(kind: str) -> None:
    server, target = APP_SPECS[kind]
    readme = (EXAMPLES / f"{kind}_api" / "README.md").read_text()
    runs = [line for line in readme.splitlines() if line.startswith(f"{server} ")]
    assert runs and all(target in line for line in runs), runs
