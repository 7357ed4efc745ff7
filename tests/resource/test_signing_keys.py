"""The verifier's keys come from the issuer's JWKS only: cached by ``kid``, fetched again on
an unknown ``kid`` at most once per interval, following the server's own rotation and
withdrawal (``latchkey-server keys rotate|withdraw``); a token of another deployment or
signed with any other key is ``invalid_token``.

The JWKS fetches are counted on the verifier's own httpx client (an event hook), so the
count is of real requests to the real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from latchkey_resource import InvalidToken, ResourceVerifier

from tests.resource.conftest import Deployment, app_headers, bearer
from tests.server.test_key_rotation import jwks_kids, keys_command, kid


class Counted:
    """A verifier whose HTTP requests are counted by path."""

    def __init__(self, deployment: Deployment, **options: object) -> None:
        self.paths: list[str] = []
        http = httpx.Client(timeout=5, event_hooks={
            "request": [lambda request: self.paths.append(request.url.path)]})
        self.verifier: ResourceVerifier = deployment.verifier(http_client=http, **options)

    @property
    def jwks_fetches(self) -> int:
        return self.paths.count("/.well-known/jwks.json")

    def verify(self, token: str) -> str:
        return self.verifier.verify(bearer(token), headers=app_headers()).session_id


def resigned(token: str, *, key_id: str, key: Ed25519PrivateKey | None = None,
             **header: str) -> str:
    """The token's own claims, signed with another key under the given ``kid``."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key or Ed25519PrivateKey.generate(), algorithm="EdDSA",
                      headers={"kid": key_id, "typ": "at+jwt", **header})


@pytest.fixture(scope="module")
def other(deployment_factory: Callable[..., Deployment]) -> Deployment:
    return deployment_factory()


def test_a_token_of_another_deployment_is_invalid_token(deployment, other):
    theirs = other.sign_in()["access_token"]
    with pytest.raises(InvalidToken):
        Counted(deployment).verify(theirs)


def test_our_claims_and_kid_signed_with_any_other_key_are_invalid_token(deployment):
    tokens = deployment.sign_in()
    counted = Counted(deployment)
    assert counted.verify(tokens["access_token"]) == tokens["session_id"]
    with pytest.raises(InvalidToken):
        counted.verify(resigned(tokens["access_token"], key_id=kid(tokens["access_token"])))


@pytest.mark.parametrize("header", ["jku", "x5u"])
def test_a_token_pointing_at_its_own_keys_is_refused_without_fetching_them(deployment, header):
    tokens = deployment.sign_in()
    counted = Counted(deployment)
    counted.verify(tokens["access_token"])
    key = Ed25519PrivateKey.generate()
    forged = resigned(tokens["access_token"], key_id="attacker", key=key,
                      **{header: "http://127.0.0.1:9/keys.json"})
    with pytest.raises(InvalidToken):
        counted.verify(forged)
    assert all(not p.endswith("keys.json") for p in counted.paths)


def test_an_unknown_kid_fetches_the_jwks_once_and_a_flood_of_them_no_more(deployment):
    tokens = deployment.sign_in()
    counted = Counted(deployment)
    counted.verify(tokens["access_token"])
    assert counted.jwks_fetches == 1
    for _ in range(50):
        with pytest.raises(InvalidToken):
            counted.verify(resigned(tokens["access_token"], key_id=uuid.uuid4().hex))
    assert counted.jwks_fetches == 2, counted.paths
    # The real token still verifies, from the cache.
    assert counted.verify(tokens["access_token"]) == tokens["session_id"]
    assert counted.jwks_fetches == 2


def test_a_rotation_is_followed_without_a_refetch_and_a_second_with_one(deployment):
    counted = Counted(deployment)
    before = deployment.sign_in()
    counted.verify(before["access_token"])
    assert keys_command(deployment.server, "rotate").returncode == 0
    # The server published its next key before signing with it: the JWKS held knows it.
    after = deployment.sign_in()
    assert kid(after["access_token"]) != kid(before["access_token"])
    assert counted.verify(after["access_token"]) == after["session_id"]
    assert counted.jwks_fetches == 1
    # Two rotations in the JWKS's lifetime sign with a key it never held: one refetch.
    assert keys_command(deployment.server, "rotate").returncode == 0
    latest = deployment.sign_in()
    assert counted.verify(latest["access_token"]) == latest["session_id"]
    assert counted.jwks_fetches == 2
    # Tokens of the retired keys still verify while their keys stay published.
    assert counted.verify(before["access_token"]) == before["session_id"]


def test_a_withdrawn_key_stops_verifying_once_the_jwks_is_fetched_again(deployment):
    counted = Counted(deployment, jwks_max_age_seconds=1.0)
    tokens = deployment.sign_in()
    withdrawn = kid(tokens["access_token"])
    assert counted.verify(tokens["access_token"]) == tokens["session_id"]
    result = keys_command(deployment.server, "withdraw", withdrawn)
    assert result.returncode == 0, result.stderr
    assert withdrawn not in jwks_kids(deployment.server)
    time.sleep(1.1)
    # The cached signature result is refused too: the key is asked about on every use.
    with pytest.raises(InvalidToken):
        counted.verify(tokens["access_token"])
    fresh = deployment.sign_in()
    assert counted.verify(fresh["access_token"]) == fresh["session_id"]
