"""P1 follow-ups (issue 17): a refresh that binds an unbound session keeps the reuse
semantics of the token chain, and bad proofs on genuine tokens spend the invalid-token
budget, end to end on a real server and a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import PASSWORD, RedisProcess, ServerProcess
from tests.server.dpop_support import (
    DPoPKey,
    assert_refused,
    dpop_headers,
    register,
    signed_in_with_nonce,
)
from tests.server.oauth_support import DEFAULT_CLIENT_ID, FORM
from tests.server.ops_support import wipe_rate_limits
from tests.server.test_dpop import events, refresh


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """The default policy: DPOP=allowed, stolen tokens reported (the session kept)."""
    return module_server_factory()


def bearer_session(server: ServerProcess) -> dict[str, str]:
    """Sign in without a proof: an unbound session (an old SDK, or one before DPoP)."""
    with server.client() as c:
        username = register(c)
        r = c.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer", r.text
    return dict(r.json())


# -- 1. binding on refresh ---------------------------------------------------------------
def test_a_thief_binding_a_stolen_unbound_token_loses_the_session_at_the_victims_retry(
        server):
    victim = bearer_session(server)
    thief_key = DPoPKey()
    # The thief refreshes the copied token first, with their own key: it binds the session.
    r = refresh(server, thief_key, victim)
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    thief = r.json()
    before = len(events(server, "refresh_token_reused"))
    # The victim's own refresh, inside the grace window, presents the previous token: the
    # chain has two holders, so it is reuse, and the session ends for both.
    r = refresh(server, None, victim)
    assert r.status_code == 401 and r.json()["code"] == "refresh_token_reused", r.text
    assert len(events(server, "refresh_token_reused")) == before + 1
    r = refresh(server, thief_key, thief)
    assert r.status_code == 401 and r.json()["code"] == "session_revoked", r.text
    assert r.json()["reason"] == "reuse"


def test_a_retry_with_the_key_that_bound_the_session_gets_the_same_successor(server):
    tokens = bearer_session(server)
    key = DPoPKey()
    first = refresh(server, key, tokens)
    assert first.status_code == 200, first.text
    retry = refresh(server, key, tokens)  # the answer was lost: the same device retries
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["token_type"] == "DPoP"


def test_a_retry_of_an_unbound_session_with_a_proof_does_not_bind_it(server):
    tokens = bearer_session(server)
    first = refresh(server, None, tokens)  # the victim rotates, unbound
    assert first.status_code == 200 and first.json()["token_type"] == "Bearer", first.text
    # A thief replays the previous token inside the grace window with a key: reuse, not a
    # binding of the victim's session to the thief's key.
    r = refresh(server, DPoPKey(), tokens)
    assert r.status_code == 401 and r.json()["code"] == "refresh_token_reused", r.text
    r = refresh(server, None, first.json())
    assert r.status_code == 401 and r.json()["reason"] == "reuse", r.text


def test_a_bound_sessions_retry_with_the_same_key_still_replays(server):
    key = DPoPKey()
    tokens = refresh(server, key, bearer_session(server)).json()
    first = refresh(server, key, tokens)
    retry = refresh(server, key, tokens)
    assert first.status_code == retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]


# -- 5. bad proofs spend the invalid-token budget ----------------------------------------
PROOF_BUDGET = 4


@pytest.fixture(scope="module")
def metered(module_redis_factory: Callable[..., RedisProcess],
            module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server on its own store with a small invalid-token budget, and nonces on (a nonce
    demand is free); each test starts with the counters wiped."""
    store = module_redis_factory()
    server = module_server_factory(store_url=store.url, invalid_tokens_per_ip=PROOF_BUDGET,
                                   invalid_tokens_per_ip_window=600, dpop_nonce="on",
                                   dpop_nonce_period=86400)
    server.store = store  # type: ignore[attr-defined]
    return server


@pytest.fixture
def fresh_budget(metered: ServerProcess) -> ServerProcess:
    wipe_rate_limits(metered.store.client())  # type: ignore[attr-defined]
    return metered


def test_bad_proofs_on_a_genuine_token_spend_the_invalid_token_budget(fresh_budget):
    metered = fresh_budget
    key = DPoPKey()
    tokens, nonce = signed_in_with_nonce(metered, key)
    path = "/v1/me"
    with metered.client() as c:
        # Nonce demands are the protocol's first answer: never counted.
        for _ in range(PROOF_BUDGET + 2):
            r = c.get(path, headers=dpop_headers(key, metered, "GET", path,
                                                 tokens["access_token"]))
            assert_refused(r, 401, "use_dpop_nonce")
        # A genuine token with proofs by guessed keys: each spends the budget...
        for _ in range(PROOF_BUDGET):
            r = c.get(path, headers=dpop_headers(DPoPKey(), metered, "GET", path,
                                                 tokens["access_token"], nonce=nonce))
            assert_refused(r, 401)
        # ...and past it the address is refused.
        r = c.get(path, headers=dpop_headers(key, metered, "GET", path,
                                             tokens["access_token"], nonce=nonce,
                                             claims={"htu": "https://elsewhere.example/x"}))
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) > 0


def test_bad_proofs_on_a_refresh_spend_the_same_budget_on_both_faces(fresh_budget):
    server = fresh_budget
    key = DPoPKey()
    tokens, nonce = signed_in_with_nonce(server, key)
    for _ in range(PROOF_BUDGET - 1):
        assert_refused(refresh(server, DPoPKey(), tokens, nonce=nonce), 400)
    with server.client() as c:
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": DEFAULT_CLIENT_ID}
        r = c.post("/oauth/token", data=form,
                   headers={**FORM, **dpop_headers(DPoPKey(), server, "POST", "/oauth/token",
                                                   nonce=nonce)})
        assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof", r.text
    # Past the budget a further guess is refused before it is looked at; the key holder's
    # own refresh is not a failure and still goes through.
    r = refresh(server, DPoPKey(), tokens, nonce=nonce)
    assert r.status_code == 429, r.text
    assert refresh(server, key, tokens, nonce=nonce).status_code == 200
