"""H1 and X3 against a real server on loopback: hostile bodies, methods and transfer
encodings get a problem+json 4xx with a stable code, and nothing stored changes.

Each body is sent to every endpoint that reads one (register, login, refresh, logout and
the signed-in ones), before the view and the throttle's account key alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD, Api, unique_username

DEPTH = 5000  # far past any sane nesting, well inside the 16 KiB body limit

HOSTILE_BODIES = {
    "deep_array": b'{"username": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "deep_object": b'{"username": ' + b'{"a":' * (DEPTH // 2) + b"1" + b"}" * (DEPTH // 2) + b"}",
    "deep_top_level": b"[" * DEPTH + b"]" * DEPTH,
    "lone_high_surrogate": b'{"username": "\\ud800", "password": "x", "refresh_token": "\\ud800"}',
    "lone_low_surrogate": b'{"username": "a\\udc00b", "password": "\\udfff"}',
    "surrogate_in_key": b'{"\\ud800": 1}',
    "invalid_utf8": b'{"username": "\xff\xfe", "password": "\xc3"}',
    "utf16": '{"username": "alice", "password": "x"}'.encode("utf-16"),
    "duplicate_keys": b'{"username": "a", "username": "b", "password": "x"}',
    "not_an_object": b'"just a string"',
    "nan": b'{"username": NaN, "password": Infinity}',
    "huge_int": b'{"username": ' + b"9" * 10000 + b"}",
}

# Every endpoint that reads a JSON body; ``bearer`` says whether it needs a session first.
BODY_ENDPOINTS = [
    ("/v1/auth/register", False),
    ("/v1/auth/login", False),
    ("/v1/auth/refresh", False),
    ("/v1/auth/logout", False),
    ("/v1/auth/logout", True),
    ("/v1/auth/logout-all", True),
    ("/v1/auth/reauth", True),
    ("/v1/auth/password", True),
]


@pytest.fixture
def signed_in(api: Api) -> Iterator[dict]:
    _, tokens = api.new_user_session()
    yield tokens


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["code"] == code


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
@pytest.mark.parametrize(("path", "needs_session"), BODY_ENDPOINTS)
def test_hostile_json_bodies_get_a_400_problem_on_every_body_endpoint(
        api: Api, path: str, needs_session: bool, name: str):
    headers = {"Content-Type": "application/json"}
    tokens = None
    if needs_session:
        _, tokens = api.new_user_session()
        headers.update(bearer(tokens))
    r = api.http.post(path, content=HOSTILE_BODIES[name], headers=headers)
    assert_problem(r, 400, "invalid_request")
    if tokens is not None:  # nothing changed: the session is still live
        assert api.me(tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("name", ["deep_array", "lone_high_surrogate", "duplicate_keys"])
def test_hostile_json_is_refused_on_views_that_read_no_body_too(api: Api, name: str):
    # /v1/me reads no body, but the invalid-token handler asks whether a refresh token was
    # in it: that question goes through the same parser.
    r = api.http.request("GET", "/v1/me", content=HOSTILE_BODIES[name],
                         headers={"Content-Type": "application/json"})
    assert r.status_code < 500 and r.headers["Content-Type"] == "application/problem+json"


def test_a_hostile_refresh_body_leaves_the_session_and_its_token_untouched(api: Api):
    _, tokens = api.new_user_session()
    body = (b'{"refresh_token": "' + tokens["refresh_token"].encode()
            + b'", "refresh_token": "\\ud800"}')
    r = api.http.post("/v1/auth/refresh", content=body,
                      headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "invalid_request")
    assert api.refresh(tokens["refresh_token"]).status_code == 200


def test_duplicate_keys_cannot_smuggle_a_second_username_past_the_account_throttle(
        server_factory):
    # The throttle keys on one username, the view would have used the other: refused.
    server = server_factory(login_failures_per_account=2)
    api = Api(server.base_url)
    victim = api.register()
    body = (b'{"username": "nobody-' + unique_username().encode() + b'", "username": "'
            + victim.encode() + b'", "password": "wrong password 123"}')
    for _ in range(4):
        r = api.http.post("/v1/auth/login", content=body,
                          headers={"Content-Type": "application/json"})
        assert_problem(r, 400, "invalid_request")
    assert api.login(victim)["access_token"]  # no failure was counted against the victim


def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    yield b'{"username": "'
    sent = 14
    while sent < total:
        yield b"a" * size
        sent += size
    yield b'", "password": "x"}'


@pytest.mark.parametrize("path", ["/v1/auth/login", "/v1/auth/register", "/v1/auth/refresh"])
def test_a_chunked_body_over_the_limit_is_413_before_any_parsing(api: Api, path: str):
    r = api.http.post(path, content=_chunks(20_000),
                      headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_problem(r, 413, "payload_too_large")


def test_a_chunked_body_under_the_limit_is_read_normally(api: Api):
    username = api.register()
    body = f'{{"username": "{username}", "password": "{PASSWORD}"}}'.encode()
    r = api.http.post("/v1/auth/login", content=iter([body[:10], body[10:]]),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_trace_is_405_with_an_allow_header_naming_the_real_methods(api: Api):
    r = api.http.request("TRACE", "/v1/auth/login")
    assert_problem(r, 405, "method_not_allowed")
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"POST"}
    assert "TRACE" not in r.headers["Allow"]
    r = api.http.request("TRACE", "/v1/me")
    assert_problem(r, 405, "method_not_allowed")
    assert "GET" in r.headers["Allow"]


def test_trace_on_a_path_that_does_not_exist_is_405_with_an_empty_allow(api: Api):
    r = api.http.request("TRACE", "/nowhere/at/all")
    assert_problem(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == ""


# -- D3: one definition of a device id, at login too ---------------------------------------
@pytest.mark.parametrize("device_id", ["Téléphone-1", "phone\n1", "\u202eevil", "x" * 129,
                                       17, ["a"]])
def test_login_refuses_a_device_id_the_header_could_not_carry(api: Api, device_id):
    username = api.register()
    r = api.http.post("/v1/auth/login", json={"username": username, "password": PASSWORD,
                                              "device_id": device_id})
    assert_problem(r, 422, "invalid_request")
    assert r.json()["field"] == "device_id"
    tokens = api.login(username)  # nothing was created by the refused login
    sessions = api.http.get("/v1/auth/sessions", headers=bearer(tokens)).json()["sessions"]
    assert len(sessions) == 1


def test_a_printable_ascii_device_id_binds_and_matches_its_header(server_factory):
    server = server_factory(binding_policy="enforce")
    api = Api(server.base_url)
    username = api.register()
    tokens = api.login(username, device_id="Pixel 8 (ada) #1")
    r = api.http.get("/v1/me", headers={**bearer(tokens), "X-Device-Id": "Pixel 8 (ada) #1"})
    assert r.status_code == 200, r.text

