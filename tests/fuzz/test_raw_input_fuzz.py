"""Fuzz what no schema describes: raw bodies, transfer encodings and URLs (H1).

Schemathesis (``test_api_fuzz.py``) sends what the OpenAPI document describes, serialised
by a well-behaved JSON encoder. These properties send the bytes a hostile client would:
deep nesting, lone surrogate escapes, invalid UTF-8, duplicate keys, bare constants,
chunked framing and random URLs. Whatever arrives, the answer is never a 5xx, and every
error is problem+json with a code from the contract. A real server on loopback.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latchkey_server.errors import ERROR_CODES

from tests.conftest import PASSWORD, ServerProcess, unique_username

BODY_PATHS = ["/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout",
              "/v1/auth/logout-all", "/v1/auth/reauth", "/v1/auth/password",
              "/v1/admin/sessions/revoke", "/v1/me/sensitive", "/v1/me"]
FIELDS = ["username", "password", "refresh_token", "device_id", "device_name", "scope",
          "current_password", "new_password", "session_id"]


@pytest.fixture(scope="module")
def http(fuzz_server: ServerProcess):
    with httpx.Client(base_url=fuzz_server.base_url, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def bearer(http: httpx.Client) -> str:
    username = unique_username("rawfuzz")
    http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    return r.json()["access_token"]


_escape = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\\"", "\\\\",
                           "\\x", "\\u12", "\\/"])
_json_string = st.lists(st.one_of(st.text(max_size=8), _escape), max_size=4).map(
    lambda parts: '"' + "".join(p.replace('"', "") if not p.startswith("\\") else p
                                for p in parts) + '"')
_scalar = st.one_of(_json_string, st.sampled_from(
    ["0", "-1", "1e999", "9" * 5000, "NaN", "Infinity", "-Infinity", "true", "null", "01"]))


def _nest(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Return a hostile body: near-JSON text, deeply nested, or plain bytes."""
    kind = draw(st.sampled_from(["object", "nested", "bytes", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    keys = draw(st.lists(st.one_of(st.sampled_from(FIELDS), _json_string.map(
        lambda s: s[1:-1])), min_size=0, max_size=5))
    members = ", ".join(f'"{k}": {draw(_scalar)}' for k in keys)
    text = "{" + members + "}"
    if kind == "nested":
        text = _nest(draw(st.integers(1, 6000)), text) if draw(st.booleans()) else (
            '{"username": ' + _nest(draw(st.integers(1, 6000)), "1") + "}")
    data = text.encode("utf-8", "surrogatepass")
    if kind == "truncated":
        data = data[:draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
    return data


def assert_contract(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["Content-Type"] == "application/problem+json", r.text[:300]
        assert json.loads(r.text)["code"] in ERROR_CODES


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(BODY_PATHS), body=raw_bodies(),
       content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                     "application/json; charset=latin-1", "text/plain",
                                     "application/x-www-form-urlencoded"]),
       signed_in=st.booleans(), chunked=st.booleans())
def test_no_raw_body_gets_a_5xx(http, bearer, path, body, content_type, signed_in, chunked):
    headers = {"Content-Type": content_type}
    if signed_in:
        headers["Authorization"] = f"Bearer {bearer}"
    content = iter([body[: len(body) // 2], body[len(body) // 2:]]) if chunked else body
    assert_contract(http.post(path, content=content, headers=headers))


_url_text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
    st.sampled_from(["%zz", "%00", "%ff%fe", "%", "%2e%2e", "..", "%25%32%35", "+", "[]"]))
# Printable delimiters and a bare % go through unencoded, so broken escapes reach the server.
_RAW_SAFE = "%:@!$&'()*+,;=[]"


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "TRACE", "OPTIONS",
                               "HEAD", "PROPFIND"]),
       segments=st.lists(_url_text, max_size=4),
       query=st.lists(st.tuples(_url_text, _url_text), max_size=4),
       device_id=st.one_of(st.none(), st.binary(max_size=40)))
def test_no_url_method_or_header_gets_a_5xx(http, method, segments, query, device_id):
    target = "/v1/" + "/".join(quote(s, safe=_RAW_SAFE) for s in segments)
    if query:
        target += "?" + "&".join(f"{quote(k, safe=_RAW_SAFE)}={quote(v, safe=_RAW_SAFE)}"
                                 for k, v in query)
    url = http.base_url.copy_with(raw_path=target.encode())
    headers = {"X-Device-Id": device_id} if device_id is not None else {}
    try:
        r = http.request(method, url, headers=headers)
    except httpx.LocalProtocolError:
        return  # a header value httpx itself will not send: nothing reached the server
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if _refused_by_gunicorn(r):
        return
    if r.status_code >= 400 and method != "HEAD" and r.content:
        assert r.headers["Content-Type"] == "application/problem+json", r.text[:300]


def _refused_by_gunicorn(r: httpx.Response) -> bool:
    """Say whether gunicorn's HTTP parser refused the request before the app saw it.

    A header value with control characters (RFC 9110 section 5.5 forbids them) is
    answered by gunicorn with its own HTML 400; the app cannot shape that answer, and it
    is still a 4xx that changed nothing.
    """
    return (r.status_code == 400 and r.headers.get("Content-Type", "").startswith("text/html")
            and "Invalid HTTP Header" in r.text)
