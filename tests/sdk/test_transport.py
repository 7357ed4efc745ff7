"""URL and TLS rules that keep tokens off the wire in the clear, out of URLs and on the
origins the app named (S2, X2, R4)."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from latchkey_client import (
    ConfigurationError,
    InsecureRequestError,
    LatchkeyClient,
    spki_sha256,
)
from latchkey_client.transport import (
    SESSION_HEADERS,
    TOKEN_QUERY_PARAMS,
    TokenOrigins,
    check_base_url,
    check_request_url,
    same_origin,
)

from .certs import make_key, self_signed, spki_pin


@pytest.mark.parametrize("url", ["http://example.com", "http://10.0.0.2:8000", "ftp://x", "/v1"])
def test_plain_http_or_non_absolute_base_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        LatchkeyClient(base_url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:9",
                                 "https://auth.example.com"])
def test_https_and_loopback_http_base_urls_are_accepted(url: str) -> None:
    assert check_base_url(url).path.endswith("/")


def test_base_url_with_credentials_or_query_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        check_base_url("https://user:pw@auth.example.com")
    with pytest.raises(ConfigurationError):
        check_base_url("https://auth.example.com/?token=x")


def test_verify_false_is_refused_for_https() -> None:
    with pytest.raises(ConfigurationError):
        LatchkeyClient(base_url="https://auth.example.com", verify=False)


@pytest.mark.parametrize("name", [*sorted(TOKEN_QUERY_PARAMS), "Access_Token"])
def test_every_token_like_query_parameter_is_refused(name: str) -> None:
    with pytest.raises(InsecureRequestError):
        check_request_url(httpx.URL(f"https://a.example/v1/me?x=1&{name}=abc"))


def test_ordinary_query_parameters_pass() -> None:
    check_request_url(httpx.URL("https://a.example/v1/items?page=2&sort=name"))


def test_same_origin_compares_scheme_host_and_port() -> None:
    base = httpx.URL("https://a.example/")
    assert same_origin(base, httpx.URL("https://A.example:443/x"))
    assert not same_origin(base, httpx.URL("http://a.example/x"))
    assert not same_origin(base, httpx.URL("https://a.example:8443/x"))
    assert not same_origin(base, httpx.URL("https://evil.example/x"))


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_spki_hash_matches_cryptography_for_each_key_type(kind: str) -> None:
    cert = self_signed(make_key(kind))
    assert spki_sha256(cert.public_bytes(serialization.Encoding.DER)) == spki_pin(cert)


def test_pins_must_be_sha256_digests() -> None:
    with pytest.raises(ConfigurationError):
        LatchkeyClient(base_url="https://a.example", pins=["not-a-pin"])
    with pytest.raises(ConfigurationError):
        LatchkeyClient(base_url="http://127.0.0.1:1", pins=["sha256/" + "A" * 43 + "="])


# -- api_origins (R4) ------------------------------------------------------------------------

@pytest.mark.parametrize(("origin", "says"), [
    ("https://api.example.com/v1", "path"),
    ("https://api.example.com/?x=1", "query"),
    ("https://api.example.com/#top", "fragment"),
    ("https://user:pw@api.example.com", "credentials"),
    ("https://*.example.com", "wildcard"),
    ("http://api.example.com", "unencrypted"),
    ("http://10.0.0.2:8000", "unencrypted"),
    ("ftp://api.example.com", "https://"),
    ("api.example.com", "https://"),
    ("https://", "https://"),
])
def test_an_api_origin_that_is_not_exactly_one_secure_origin_is_refused_at_construction(
    origin: str, says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        LatchkeyClient(base_url="https://auth.example.com", api_origins=[origin])


def test_api_origins_given_as_one_string_is_refused_not_read_letter_by_letter() -> None:
    with pytest.raises(ConfigurationError, match=r"api_origins=\[\.\.\.\]"):
        LatchkeyClient(base_url="https://auth.example.com",
                       api_origins="https://api.example.com")  # type: ignore[arg-type]


def test_token_origins_match_scheme_host_and_port_exactly() -> None:
    origins = TokenOrigins(httpx.URL("https://auth.example.com/latchkey/"),
                           ["https://api.example.com", "http://127.0.0.1:8081"])
    for allowed in ("https://auth.example.com/v1/me", "https://api.example.com:443/x",
                    "https://API.example.com/orders?page=2", "http://127.0.0.1:8081/"):
        assert origins.allows(httpx.URL(allowed)), allowed
    for refused in ("http://api.example.com/", "https://api.example.com:8443/",
                    "https://api.example.com.evil.example/", "https://evil.example/",
                    "http://127.0.0.1:8082/", "http://localhost:8081/", "https:evil.example"):
        assert not origins.allows(httpx.URL(refused)), refused
        with pytest.raises(InsecureRequestError):
            origins.check(httpx.URL(refused))


def _scripted(seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answer as a server on ``http://localhost`` (port 80) that upgrades to https would."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json={
                "access_token": "header.payload.signature", "refresh_token": "lkr_scripted",
                "expires_in": 300, "session_id": "s1", "token_type": "Bearer"})
        if request.url.scheme == "http":
            return httpx.Response(301, headers={"Location": "https://localhost/landing"})
        return httpx.Response(200, json={})
    return httpx.MockTransport(handle)


def test_httpx_keeps_authorization_on_an_https_upgrade_and_the_sdk_strips_it() -> None:
    """The one cross-origin redirect httpx keeps ``Authorization`` on (``http://host:80`` to
    ``https://host:443``), which no loopback test server can offer without port 80."""
    seen: list[httpx.Request] = []
    with httpx.Client(transport=_scripted(seen), follow_redirects=True) as plain:
        plain.get("http://localhost/x", headers={"Authorization": "Bearer t"})
    assert seen[-1].url.scheme == "https" and seen[-1].headers.get("Authorization")

    seen.clear()
    with LatchkeyClient(base_url="http://localhost", transport=_scripted(seen),
                        device_id="d1", idle_logout=False) as client:
        client.login(username="ada", password="pw")
        client.get("/x", follow_redirects=True)
    first, landing = seen[-2], seen[-1]
    assert first.headers["Authorization"] == "Bearer header.payload.signature"
    assert landing.url == "https://localhost/landing"
    assert not any(name in landing.headers for name in SESSION_HEADERS)


def test_a_relative_path_whose_query_holds_a_url_still_goes_to_the_latchkey_server() -> None:
    """Absolute means a scheme and a host, not "contains ://"."""
    seen: list[httpx.Request] = []
    with LatchkeyClient(base_url="http://localhost/", transport=_scripted(seen),
                        idle_logout=False) as client:
        client.login(username="ada", password="pw")
        client.get("/landing?next=https://elsewhere.example/")
        client.get("landing?next=https://elsewhere.example/")
        client.get("http://localhost/landing")
        sent = len(seen)
        with pytest.raises(InsecureRequestError):
            client.get("https://elsewhere.example/landing")
    assert len(seen) == sent
    assert [str(r.url) for r in seen[1:]] == [
        "http://localhost/landing?next=https://elsewhere.example/",
        "http://localhost/landing?next=https://elsewhere.example/",
        "http://localhost/landing",
    ]
