"""R4: the SDK sends the access token to the Latchkey server and the ``api_origins`` the app
names, and to nothing else, redirects included; an API origin's refusals mean what
Latchkey's mean.

Against a real Latchkey server on loopback, a real API origin (``api_origin.py``: a WSGI
service that checks each token by introspection) and a real foreign origin that records
whatever reaches it. Every test runs on the sync and the async client (the ``sdk`` fixture).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from latchkey_client import (
    ApiError,
    EventName,
    InsecureRequestError,
    PinningError,
    SessionEndedError,
    SessionRevokedError,
    SignOutReason,
)

from tests.conftest import Api, ServerProcess, free_port
from tests.server.oauth_support import create_client

from .api_origin import ApiOrigin
from .certs import make_key, self_signed, spki_pin
from .conftest import PASSWORD, Sdk, SdkClient, make_user
from .proxy import LoopbackProxy

DEVICE = "phone-r4"


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """2 s access tokens, so an API origin's ``token_expired`` is quick to reach."""
    return module_server_factory(access_token_ttl=2)


@pytest.fixture(scope="module")
def api_origin(server: ServerProcess) -> Iterator[ApiOrigin]:
    resource = create_client(server, "resource", "r4-api")
    origin = ApiOrigin(issuer=server.base_url, client_id=resource["client_id"],
                       client_secret=resource["client_secret"]).start()
    yield origin
    origin.stop()


@pytest.fixture(scope="module")
def foreign() -> Iterator[ApiOrigin]:
    """An origin nobody named: nothing of the session may ever reach it."""
    origin = ApiOrigin().start()
    yield origin
    origin.stop()


@pytest.fixture
def signed_in(sdk: Sdk, server: ServerProcess, api_origin: ApiOrigin
              ) -> Callable[..., SdkClient]:
    def make(**options: Any) -> SdkClient:
        options.setdefault("api_origins", [api_origin.origin])
        client = sdk(server, device_id=DEVICE, **options)
        client.login(username=make_user(server), password=PASSWORD)
        return client

    return make


def no_session_reached(foreign: ApiOrigin, since: int) -> bool:
    return all(s.authorization is None and s.device_id is None for s in foreign.seen[since:])


def test_a_named_api_origin_gets_the_token_and_answers_for_the_same_session(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin
) -> None:
    with signed_in() as client:
        me = client.get("/v1/me").json()
        r = client.get(api_origin.url("/whoami"))
        assert r.status_code == 200
        assert r.json() == {"sub": me["user_id"], "sid": me["session_id"]}
        last = api_origin.requests("/whoami")[-1]
        # The session is bound to the device key (DPoP is on by default), so the token goes
        # to the API origin under the DPoP scheme, as it does to Latchkey (P1).
        assert client.device_key_thumbprint is not None
        assert last.authorization is not None and last.authorization.startswith("DPoP ")
        assert last.device_id == DEVICE  # the resource server applies the binding policy
        # The app's own httpx client with ``client.auth`` gets the same rule.
        assert client.app_get(api_origin.url("/whoami")).status_code == 200


@pytest.mark.parametrize("where", ["foreign", "other port", "https of the same host:port",
                                   "a path on no origin"])
def test_a_request_to_an_origin_not_named_is_refused_before_sending(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, foreign: ApiOrigin,
    where: str
) -> None:
    since = len(foreign.seen)
    url = {
        "foreign": foreign.url("/anything"),
        "other port": foreign.url("/whoami"),
        "https of the same host:port": api_origin.url("/whoami").replace("http:", "https:"),
        "a path on no origin": "https:evil.example/whoami",
    }[where]
    with signed_in() as client:
        with pytest.raises(InsecureRequestError, match="neither the Latchkey server"):
            client.get(url)
        assert len(foreign.seen) == since
        assert client.is_signed_in


def test_a_redirect_to_another_origin_is_not_followed_by_default(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, foreign: ApiOrigin
) -> None:
    since = len(foreign.seen)
    with signed_in() as client:
        r = client.get(api_origin.url("/redirect"), params={"to": foreign.url("/landing")})
        assert r.status_code == 307
        assert len(foreign.seen) == since


def test_a_followed_redirect_to_another_origin_never_carries_the_session(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, foreign: ApiOrigin
) -> None:
    since = len(foreign.seen)
    with signed_in() as client:
        r = client.get(api_origin.url("/redirect"), params={"to": foreign.url("/landing")},
                       follow_redirects=True)
        assert r.status_code == 200
        assert [s.path for s in foreign.seen[since:]] == ["/landing"]
        assert no_session_reached(foreign, since)
        assert api_origin.requests("/redirect")[-1].authorization is not None


def test_the_apps_own_client_following_redirects_keeps_the_session_home_with_the_hook(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, foreign: ApiOrigin
) -> None:
    with signed_in() as client:
        url = api_origin.url("/redirect?to=") + foreign.url("/landing")
        hook = client.auth.request_hook if client.kind == "sync" else client.auth.async_request_hook
        since = len(foreign.seen)
        client.app_get(url, follow_redirects=True)
        # The control: httpx alone dropped Authorization here but kept the device id.
        assert [s.device_id for s in foreign.seen[since:]] == [DEVICE]
        since = len(foreign.seen)
        assert client.app_get(url, follow_redirects=True,
                              event_hooks={"request": [hook]}).status_code == 200
        assert [s.path for s in foreign.seen[since:]] == ["/landing"]
        assert no_session_reached(foreign, since)


def test_a_refusal_from_a_redirects_foreign_target_neither_refreshes_nor_signs_out(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, foreign: ApiOrigin
) -> None:
    since = len(foreign.seen)
    with signed_in() as client:
        with pytest.raises(ApiError) as caught:
            client.get(api_origin.url("/redirect"), params={"to": foreign.url("/refuse")},
                       follow_redirects=True)
        assert not isinstance(caught.value, SessionEndedError)
        assert caught.value.status == 401
        assert no_session_reached(foreign, since)
        assert client.is_signed_in and client.auth.refresh_requests == 0
        assert client.get(api_origin.url("/whoami")).status_code == 200


@pytest.mark.parametrize("path", ["/whoami", "/rfc6750/whoami"])
def test_an_api_origins_401_token_expired_refreshes_once_and_resends(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin, path: str
) -> None:
    """Problem+json ``token_expired``, or a bare RFC 6750 ``invalid_token`` challenge."""
    frozen = time.monotonic()
    # A client whose clock stands still believes its token is fresh: only the API origin's
    # 401 can tell it otherwise.
    with signed_in(clock=lambda: frozen) as client:
        before = len(api_origin.requests(path))
        time.sleep(2.2)
        assert client.get(api_origin.url(path)).status_code == 200
        assert [s.status for s in api_origin.requests(path)[before:]] == [401, 200]
        assert client.auth.refresh_requests == 1


def test_concurrent_calls_to_an_api_origin_at_expiry_refresh_once(
    signed_in: Callable[..., SdkClient], api_origin: ApiOrigin
) -> None:
    with signed_in() as client:
        time.sleep(2.1)  # the access token has expired
        barrier = threading.Barrier(8)
        results: list[int] = []

        def call() -> None:
            barrier.wait()
            results.append(client.get(api_origin.url("/whoami")).status_code)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 8
        assert client.auth.refresh_requests == 1


def test_a_session_ended_elsewhere_is_refused_by_the_api_origin_with_the_typed_error(
    sdk: Sdk, server: ServerProcess, api_origin: ApiOrigin
) -> None:
    username = make_user(server)
    with sdk(server, api_origins=[api_origin.origin]) as client:
        client.login(username=username, password=PASSWORD)
        ended: list[Any] = []
        client.on(EventName.SIGNED_OUT, ended.append)
        assert client.get(api_origin.url("/whoami")).status_code == 200
        # The user signs this device out from another session.
        other = Api(server.base_url)
        try:
            assert client.session is not None
            tokens = other.login(username, PASSWORD)
            r = other.http.delete(f"/v1/auth/sessions/{client.session.session_id}",
                                  headers={"Authorization": f"Bearer {tokens['access_token']}"})
            assert r.status_code in (200, 204), r.text
        finally:
            other.close()
        with pytest.raises(SessionRevokedError) as caught:
            client.get(api_origin.url("/whoami"))
        assert caught.value.code == "session_revoked"
        assert not client.is_signed_in
        assert [e.reason for e in ended] == [SignOutReason.REMOTE]


def test_api_origins_are_normalised_and_exposed(sdk: Sdk, server: ServerProcess) -> None:
    client = sdk(server, api_origins=["https://API.example.com:443/", "http://[::1]:8080",
                                      "https://api.example.com"])
    assert client.api_origins == ("https://api.example.com", "http://[::1]:8080")
    assert isinstance(client.base_url, httpx.URL)


@pytest.fixture
def tls_in_front(tmp_path: Path) -> Iterator[Callable[..., tuple[LoopbackProxy, str]]]:
    """Put a TLS proxy with a certificate of its own in front of ``upstream``; yield its pin.

    Every certificate made here goes into one CA bundle (``tmp_path / "ca.pem"``)."""
    proxies: list[LoopbackProxy] = []

    def make(upstream: str, port: int = 0) -> tuple[LoopbackProxy, str]:
        # Each its own subject: a CA bundle finds a self-signed issuer by its name.
        key = make_key()
        cert = self_signed(key, common_name=f"api-origins-test-{len(proxies)}")
        where = tmp_path / f"cert-{len(proxies)}"
        where.mkdir()
        cert_path, key_path = where / "cert.pem", where / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        with open(tmp_path / "ca.pem", "ab") as bundle:
            bundle.write(cert_path.read_bytes())
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
        proxy = LoopbackProxy(upstream, ssl_context=ctx)  # type: ignore[arg-type]
        proxy.port = port
        proxies.append(proxy.start())
        return proxy, spki_pin(cert)

    yield make
    for proxy in proxies:
        proxy.stop()


def test_pins_hold_for_every_origin_the_token_goes_to(
    sdk: Sdk, server_factory: Callable[..., ServerProcess], tmp_path: Path,
    tls_in_front: Callable[..., tuple[LoopbackProxy, str]]
) -> None:
    """One TLS context serves every origin: an API origin whose key is not pinned fails the
    pin before a byte (the token) is written to it; pinning its key too lets it through.

    The server's issuer is its TLS front's URL, as behind any TLS terminator (a DPoP proof
    names the URL the client used)."""
    port = free_port()
    server = server_factory(issuer=f"https://127.0.0.1:{port}")
    latchkey, latchkey_pin = tls_in_front(server.base_url, port)
    recorder = ApiOrigin().start()
    try:
        api, api_pin = tls_in_front(recorder.origin)
        username = make_user(server)
        ca = str(tmp_path / "ca.pem")
        with sdk(latchkey, verify=ca, pins=[latchkey_pin],
                 api_origins=[api.base_url]) as client:
            client.login(username=username, password=PASSWORD)
            with pytest.raises(PinningError):
                client.get(api.base_url + "/orders")
            assert api.seen == []  # not one request was written to the unpinned API
            assert client.is_signed_in
        with sdk(latchkey, verify=ca, pins=[latchkey_pin, api_pin],
                 api_origins=[api.base_url]) as client:
            client.login(username=username, password=PASSWORD)
            assert client.get(api.base_url + "/orders").status_code == 200
            assert recorder.requests("/orders")[-1].authorization is not None
    finally:
        recorder.stop()
