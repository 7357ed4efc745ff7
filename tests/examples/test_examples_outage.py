"""A Redis outage through the examples: they fail closed (503 ``store_unavailable``), the
SDK raises its retryable ``ServerError`` and keeps the session, and the first call after
the store is back succeeds on the same session.

The deployment's redis-server keeps its data across the restart (AOF, fsync always), as a
production store does: a store that lost its data would have lost the sessions too.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from latchkey_client import EventName, ServerError

from tests.conftest import PASSWORD, Api

from .conftest import HELLO, Deployment, Deployments


@pytest.fixture(scope="module")
def deployment(deployments: Deployments) -> Deployment:
    return deployments()


def test_a_redis_outage_fails_closed_and_the_session_survives_it(
    kind: str, deployment: Deployment, deployments: Deployments
) -> None:
    client, username = deployment.signed_in(kind)
    # A plain bearer session of the same user, for the raw HTTP check (the app's own token
    # may be bound to its device key and is the SDK's to present).
    api = Api(deployment.server.base_url)
    try:
        token = api.login(username, PASSWORD)["access_token"]
    finally:
        api.close()
    with client:
        ended: list[Any] = []
        client.on(EventName.SIGNED_OUT, ended.append)
        url = deployment.examples[kind].url(HELLO)
        session_id = client.get(url).json()["session_id"]
        down = deployment.redis
        down.stop()
        try:
            raw = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert raw.status_code == 503
            assert raw.json()["code"] == "store_unavailable"
            with pytest.raises(ServerError) as caught:
                client.get(url)
            assert (caught.value.status, caught.value.code) == (503, "store_unavailable")
            assert caught.value.retryable
            assert client.is_signed_in and ended == []
        finally:
            deployment.redis = deployments.start_redis(down.data_dir, down.port)
        r = client.get(url)
        assert r.status_code == 200 and r.json()["session_id"] == session_id
        assert ended == []
