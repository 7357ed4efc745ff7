"""URL and TLS rules that keep tokens off the wire in the clear and out of URLs (S2, X2)."""

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
    TOKEN_QUERY_PARAMS,
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
