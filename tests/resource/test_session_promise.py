"""R1 in process: a session ended anywhere is refused by a backend's verifier on the very
next request, with Latchkey's own code and reason.

Against a real redis-server and a real ``latchkey-server`` on loopback; the verifier is
built from the issuer URL and the Redis URL alone, as a backend builds it.
"""

from __future__ import annotations

import pytest
from latchkey_resource import (
    InvalidRequest,
    InvalidToken,
    Principal,
    ResourceVerifier,
    SessionRevoked,
)

from tests.conftest import PASSWORD
from tests.resource.conftest import APP_UA, DEVICE, Deployment, app_headers, bearer, bearer_to


@pytest.fixture(scope="module")
def verifier(deployment: Deployment) -> ResourceVerifier:
    return deployment.verifier()


def verify(verifier: ResourceVerifier, access_token: str, **headers: str) -> Principal:
    return verifier.verify(bearer(access_token), method="GET", url="http://api.test/orders",
                           headers=app_headers(**headers))


def test_a_live_session_gives_the_principal_the_store_holds(deployment, verifier):
    tokens = deployment.sign_in()
    principal = verify(verifier, tokens["access_token"])
    assert principal.session_id == tokens["session_id"]
    assert principal.username == tokens["username"]
    assert principal.client_id == "latchkey-app"
    assert principal.auth_level == "normal"
    assert principal.device_id == DEVICE and principal.user_agent == APP_UA
    assert principal.expires_at > principal.auth_time > 0
    assert principal.session_expires_at >= principal.expires_at
    # Who the token server says it is, the backend says too.
    me = bearer_to(deployment.server, "GET", "/v1/me", tokens["access_token"]).json()
    assert me["user_id"] == principal.user_id


def test_a_session_signed_out_from_another_device_is_refused_on_the_very_next_request(
        deployment, verifier):
    phone = deployment.sign_in()
    api = deployment.api()
    try:
        laptop = api.login(phone["username"], device_id="laptop-1")
    finally:
        api.close()
    assert verify(verifier, phone["access_token"]).session_id == phone["session_id"]
    r = bearer_to(deployment.server, "DELETE", f"/v1/auth/sessions/{phone['session_id']}",
                  laptop["access_token"])
    assert r.status_code == 204, r.text
    with pytest.raises(SessionRevoked) as refused:
        verify(verifier, phone["access_token"])
    assert refused.value.status == 401 and refused.value.code == "session_revoked"
    assert refused.value.reason == "remote"
    assert refused.value.www_authenticate == 'Bearer error="invalid_token"'
    assert refused.value.problem()["reason"] == "remote"
    # The laptop's session is untouched.
    assert verify(verifier, laptop["access_token"]).session_id == laptop["session_id"]


def test_logout_all_refuses_every_session_of_the_user(deployment, verifier):
    first = deployment.sign_in()
    api = deployment.api()
    try:
        second = api.login(first["username"], device_id="tablet-2")
    finally:
        api.close()
    for tokens in (first, second):
        verify(verifier, tokens["access_token"])
    r = bearer_to(deployment.server, "POST", "/v1/auth/logout-all", second["access_token"])
    assert r.status_code == 204, r.text
    reasons = []
    for tokens in (first, second):
        with pytest.raises(SessionRevoked) as refused:
            verify(verifier, tokens["access_token"])
        reasons.append(refused.value.reason)
    assert reasons == ["remote", "logout"]


def test_a_password_change_refuses_the_other_sessions_and_serves_the_new_one(
        deployment, verifier):
    phone = deployment.sign_in()
    api = deployment.api()
    try:
        laptop = api.login(phone["username"], device_id="laptop-3")
    finally:
        api.close()
    r = bearer_to(deployment.server, "POST", "/v1/auth/password", laptop["access_token"],
                  json={"current_password": PASSWORD,
                        "new_password": "a whole new passphrase 2026"})
    assert r.status_code == 200, r.text
    for tokens in (phone, laptop):
        with pytest.raises(SessionRevoked) as refused:
            verify(verifier, tokens["access_token"])
        assert refused.value.reason == "password_change"
    assert verify(verifier, r.json()["access_token"]).session_id == r.json()["session_id"]


def test_no_credentials_get_a_bare_bearer_challenge(verifier):
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(None, headers=app_headers())
    assert refused.value.www_authenticate == "Bearer"
    assert refused.value.code == "invalid_token"


@pytest.mark.parametrize("authorization", [
    "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-jwt", "Bearer " + "eyJ" * 800,
    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJlc2ln",
])
def test_malformed_or_unsigned_tokens_are_invalid_token_with_the_error_challenge(
        verifier, authorization):
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(authorization, headers=app_headers())
    assert refused.value.www_authenticate == 'Bearer error="invalid_token"'


def test_a_device_id_no_header_can_carry_is_refused_as_a_bad_request(deployment, verifier):
    tokens = deployment.sign_in()
    with pytest.raises(InvalidRequest) as refused:
        verifier.verify(bearer(tokens["access_token"]),
                        headers=app_headers(**{"X-Device-Id": "\x00bad"}))
    assert refused.value.status == 400 and refused.value.www_authenticate is None
