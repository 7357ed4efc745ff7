"""Failure modes: one store round trip per request; a store that is down, a store no
Latchkey server has published its policy to, an issuer whose keys cannot be fetched: each
fails closed (503 ``store_unavailable``), never lets a request through, and never hangs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from latchkey_resource import StoreUnavailable

from tests.conftest import RedisProcess, free_port
from tests.resource.conftest import Deployment, app_headers, bearer, bearer_to
from tests.server.ops_support import client_commands_during


def test_a_request_costs_one_store_round_trip(deployment):
    verifier = deployment.verifier()
    tokens = deployment.sign_in()
    # The token server's own check loads the library the verifier calls (FCALL).
    assert bearer_to(deployment.server, "GET", "/v1/me",
                     tokens["access_token"]).status_code == 200
    for _ in range(3):  # warm: connection, script cache, policy, JWKS, signature cache
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    watcher = deployment.redis.client()
    seen = [client_commands_during(watcher, lambda: verifier.verify(
        bearer(tokens["access_token"]), headers=app_headers())) for _ in range(5)]
    assert sorted(len(s) for s in seen)[2] == 1, seen
    assert all(s == ["FCALL"] for s in seen if len(s) == 1), seen


def test_a_store_that_is_down_fails_closed_within_a_bounded_time(
        deployment_factory: Callable[..., Deployment]):
    own = deployment_factory()
    verifier = own.verifier()
    tokens = own.sign_in()
    verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    own.redis.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as refused:
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    assert time.monotonic() - started < 5
    assert refused.value.status == 503 and refused.value.code == "store_unavailable"
    assert refused.value.www_authenticate is None
    assert refused.value.problem()["code"] == "store_unavailable"


def test_a_store_without_a_published_policy_fails_closed(
        deployment, module_redis_factory: Callable[..., RedisProcess]):
    empty = module_redis_factory()
    tokens = deployment.sign_in()
    verifier = deployment.verifier(redis_client=empty.client())
    with pytest.raises(StoreUnavailable, match="policy"):
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())


def test_an_issuer_whose_keys_cannot_be_fetched_fails_closed(deployment):
    tokens = deployment.sign_in()
    verifier = deployment.verifier(jwks_uri=f"http://127.0.0.1:{free_port()}/jwks.json")
    for _ in range(2):  # the second is refused without another attempt (interval)
        with pytest.raises(StoreUnavailable, match="signing keys"):
            verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    assert verifier.jwks.fetches == 1


def test_a_jwks_held_keeps_verifying_while_the_issuer_is_unreachable(
        deployment_factory: Callable[..., Deployment]):
    own = deployment_factory()
    verifier = own.verifier(jwks_max_age_seconds=1.0)
    tokens = own.sign_in()
    verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    own.server.stop()
    time.sleep(1.1)
    assert verifier.verify(bearer(tokens["access_token"]),
                           headers=app_headers()).session_id == tokens["session_id"]
    assert verifier.jwks.fetches == 2  # it tried, failed, and kept the keys it held
