"""X1 against a real server on loopback: a Latchkey token anywhere in a URL is refused.

Every bypass from the attack review (a parameter of any name, array-style names, a
``Bearer`` prefix, a token inside a path segment or glued to other text, percent-encoded
once or twice) gets 400 ``token_in_url``, and a live token's session is revoked (``leak``)
with a ``token_in_url`` security event. Hypothesis then embeds tokens in URLs at random.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api, ServerProcess


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def encode_all(text: str) -> str:
    """Percent-encode every character, letters included (what a hostile client may send)."""
    return "".join(f"%{b:02X}" for b in text.encode())


def send(api: Api, target: str, method: str = "GET") -> httpx.Response:
    # A raw target: httpx must not normalise what the attacker wrote.
    return api.http.request(method, httpx.URL(api.http.base_url.join("/")).copy_with(
        raw_path=target.encode()))


def assert_refused_and_revoked(api: Api, r: httpx.Response, tokens: dict, kind: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["code"] == "token_in_url"
    if kind == "access_token":
        after = api.me(tokens["access_token"])
    else:
        after = api.refresh(tokens["refresh_token"])
    assert after.status_code == 401 and after.json().get("reason") == "leak", after.status_code


BYPASSES = {
    "any_name": "/v1/me?q={t}",
    "array_name": "/v1/me?token[]={t}",
    "nested_name": "/healthz?data[access_token]={t}",
    "bearer_prefix": "/v1/me?access_token=Bearer%20{t}",
    "bearer_plus": "/healthz?auth=Bearer+{t}",
    "as_a_name": "/healthz?{t}=1",
    "suffix": "/v1/me?q={t}xyz",
    "prefix": "/v1/me?q=xyz{t}",
    "in_segment": "/v1/files/report-{t}.pdf",
    "segment_suffix": "/v1/files/{t}.json",
    "percent_encoded": "/v1/me?q={t_enc}",
    "double_encoded": "/v1/me?q={t_enc2}",
    "encoded_segment": "/v1/files/{t_enc}",
    "after_other_params": "/v1/me?a=1&b=2&c={t}&d=4",
}


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
@pytest.mark.parametrize("bypass", sorted(BYPASSES))
def test_each_reviewed_bypass_is_refused_and_revokes_the_leaked_session(
        api: Api, bypass: str, kind: str):
    _, tokens = api.new_user_session()
    token = tokens[kind]
    target = BYPASSES[bypass].format(t=token, t_enc=encode_all(token),
                                     t_enc2=encode_all(token).replace("%", "%25"))
    assert_refused_and_revoked(api, send(api, target), tokens, kind)


def test_a_leaked_token_raises_token_in_url_naming_its_session(api: Api,
                                                                 live_server: ServerProcess):
    _, tokens = api.new_user_session()
    r = send(api, f"/v1/me?q=Bearer%20{tokens['access_token']}")
    assert r.json()["code"] == "token_in_url"
    events = [json.loads(line) for line in live_server.logs().splitlines()
              if line.startswith("{") and '"token_in_url"' in line]
    assert any(e.get("revoked") is True and e.get("session_ref") for e in events)
    assert tokens["access_token"] not in live_server.logs()


@pytest.mark.parametrize("target", ["/v1/me?q={sid}", "/healthz?x=1&{sid}", "/v1/x/{sid}",
                                    "/v1/me?s=%20{sid}%20"])
def test_a_session_id_in_a_url_is_refused(api: Api, target: str):
    _, tokens = api.new_user_session()
    r = send(api, target.format(sid=tokens["session_id"]))
    assert r.status_code == 400 and r.json()["code"] == "token_in_url"


def test_the_session_id_of_delete_sessions_is_no_leak(api: Api):
    _, tokens = api.new_user_session()
    _, other = api.new_user_session()
    # The one route whose path carries a session id: an unknown one is 404, not 400 ...
    r = api.http.delete(f"/v1/auth/sessions/{other['session_id']}", headers=bearer(tokens))
    assert r.status_code == 404
    # ... its own is ended as asked, and a token in that segment is still a leak.
    r = api.http.delete(f"/v1/auth/sessions/{tokens['session_id']}", headers=bearer(tokens))
    assert r.status_code == 204
    _, third = api.new_user_session()
    r = send(api, f"/v1/auth/sessions/{third['refresh_token']}", method="DELETE")
    assert_refused_and_revoked(api, r, third, "refresh_token")


@pytest.mark.parametrize("target", ["/healthz?verbose=1&lang=en-GB",
                                    "/healthz?q=" + "a" * 31,
                                    "/healthz?q=" + "a" * 40,
                                    "/healthz?ref=eyJhbGciOi.not-a-token"])
def test_ordinary_query_strings_still_pass(api: Api, target: str):
    assert send(api, target).status_code == 200


_PREFIXES = st.sampled_from(["", "Bearer ", "x", "abc-", "lkr_", "eyJ", "%20", "[", "\"",
                             "token=", "a.b."])
_SUFFIXES = st.sampled_from(["", "x", ".json", "%00", "/", "&y=1", "==", "eyJ", ";"])
_NAMES = st.sampled_from(["q", "token[]", "Access_Token", "x[y][z]", "a b", "", "ref"])


@st.composite
def embeddings(draw: st.DrawFn) -> tuple[str, str]:
    """Return (where, how): a place in a URL and an encoding, each with a {t} slot."""
    text = draw(_PREFIXES) + "{t}" + draw(_SUFFIXES)
    where = draw(st.sampled_from(["query_value", "query_name", "path_segment"]))
    if where == "query_value":
        target = "/v1/me?" + quote(draw(_NAMES)) + "=" + quote(text, safe="{}")
    elif where == "query_name":
        target = "/healthz?" + quote(text, safe="{}") + "=1"
    else:
        target = "/v1/files/" + quote(text, safe="{}")
    return target, draw(st.sampled_from(["plain", "encoded", "double"]))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(embedding=embeddings(), kind=st.sampled_from(["access_token", "refresh_token"]))
def test_a_token_embedded_anywhere_in_a_url_is_refused_and_revoked(live_server, embedding,
                                                                   kind):
    target, how = embedding
    api = Api(live_server.base_url)
    try:
        _, tokens = api.new_user_session()
        token = tokens[kind]
        if how == "encoded":
            token = encode_all(token)
        elif how == "double":
            token = encode_all(token).replace("%", "%25")
        assert_refused_and_revoked(api, send(api, target.replace("{t}", token)), tokens, kind)
    finally:
        api.close()


def test_no_form_of_a_leaked_token_or_session_id_reaches_the_log(api: Api,
                                                                  live_server: ServerProcess):
    _, tokens = api.new_user_session()
    access, refresh, sid = tokens["access_token"], tokens["refresh_token"], tokens["session_id"]
    once, twice = encode_all(access), encode_all(access).replace("%", "%25")
    for target in (f"/v1/files/{twice}", f"/healthz?{twice}=1", f"/v1/x/{sid}",
                   f"/healthz?{sid}=1", f"/v1/files/{encode_all(refresh)}"):
        assert send(api, target).json()["code"] == "token_in_url"
    logs = live_server.logs()
    for secret in (access, once, twice, refresh, encode_all(refresh), sid):
        assert secret not in logs


def test_a_foreign_jwt_in_a_path_segment_is_refused_too(api: Api):
    # Not ours (HS256, short signature), so nothing to revoke; still no place for it.
    foreign = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlLW9mLTQzLWNoYXJz"
    assert send(api, f"/v1/files/{foreign}").json()["code"] == "token_in_url"
