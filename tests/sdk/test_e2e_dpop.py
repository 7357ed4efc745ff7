"""DPoP end to end: the SDK against the real server and redis-server (P1, P2).

The session is bound to the installation's key at login; every refresh, replay and
protected request carries a fresh proof by it; a refresh or access token copied to a
client without the key is refused and reported; nonces and a device clock that is off
are handled with one retry. Sync and async clients both (the ``sdk`` fixture).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from latchkey_client import (
    DPoPProofRefusedError,
    MemoryStorage,
    SessionRevokedError,
    SignOutReason,
)
from latchkey_client.dpop import ProofState, jwk_thumbprint

from tests.conftest import ServerProcess, free_port

from .conftest import PASSWORD, Sdk, SdkClient, make_user
from .proxy import LoopbackProxy


def _claims(jwt: str) -> dict:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _header(jwt: str) -> dict:
    part = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _thief(server: ServerProcess, sdk: Sdk, refresh_token: str) -> SdkClient:
    """A second device: its own SDK client and key, holding a copied refresh token."""
    storage = MemoryStorage()
    storage.save("refresh_token", refresh_token)
    return sdk(server, storage=storage, stay_signed_in=True)


@pytest.fixture(scope="module")
def revoking_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose policy ends a session whose token is used without its key."""
    return module_server_factory(dpop_stolen_token="revoke")


@pytest.fixture(scope="module")
def nonce_server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that hands out DPoP nonces and requires them."""
    return module_server_factory(dpop_nonce="on")


# -- the binding -------------------------------------------------------------------------


def test_login_binds_the_session_to_the_device_key_and_requests_prove_it(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        info = client.login(username=user, password=PASSWORD)
        assert info.dpop_bound
        jkt = client.device_key_thumbprint
        assert jkt is not None
        access = client._core.tokens.access_token
        assert _claims(access)["cnf"] == {"jkt": jkt}  # the token names this key
        assert client.get("/v1/me").json()["username"] == user
        client.refresh_now()
        assert client.session.dpop_bound
        assert _claims(client._core.tokens.access_token)["cnf"] == {"jkt": jkt}
        assert client.get("/v1/me").status_code == 200
        # Step-up makes a new session: bound to the same key.
        client.reauthenticate(password=PASSWORD)
        assert client.session.dpop_bound
        assert _claims(client._core.tokens.access_token)["cnf"] == {"jkt": jkt}
        assert client.post("/v1/me/sensitive").json() == {"ok": True}


def test_dpop_off_in_the_sdk_gives_a_bearer_session(live_server: ServerProcess,
                                                    sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server, dpop=False) as client:
        info = client.login(username=user, password=PASSWORD)
        assert not info.dpop_bound and "cnf" not in _claims(client._core.tokens.access_token)
        assert client.get("/v1/me").status_code == 200


def test_logout_keeps_the_key_and_forget_device_replaces_it(live_server: ServerProcess,
                                                           sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        client.login(username=user, password=PASSWORD)
        first = client.device_key_thumbprint
        client.logout()
        client.login(username=user, password=PASSWORD)
        assert client.device_key_thumbprint == first  # one key per installation
        assert client.forget_device().server_confirmed
        assert client.device_key_thumbprint is None
        client.login(username=user, password=PASSWORD)
        assert client.device_key_thumbprint not in (None, first)


# -- stolen tokens -----------------------------------------------------------------------


def test_a_refresh_token_copied_to_a_second_client_is_refused_and_reported(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as phone:
        phone.login(username=user, password=PASSWORD)
        copied = phone._core.tokens.refresh_token
        with _thief(live_server, sdk, copied) as thief:
            with pytest.raises(DPoPProofRefusedError) as refused:
                thief.restore()
            assert refused.value.code == "invalid_dpop_proof" and refused.value.status == 400
            assert not thief.is_signed_in  # the copy is useless there: dropped
            assert thief.device_key_thumbprint is None  # a refresh never makes a key
        # Without any proof at all (a raw HTTP client): refused the same way.
        r = httpx.post(live_server.base_url + "/v1/auth/refresh",
                       json={"refresh_token": copied})
        assert r.status_code == 400 and r.json()["code"] == "invalid_dpop_proof"
        # Reported as a stolen token; the key holder carries on (policy "report").
        assert "dpop_stolen_token" in live_server.logs()
        phone.refresh_now()
        assert phone.get("/v1/me").status_code == 200


def test_with_the_revoke_policy_the_key_holder_hears_the_session_was_stolen(
    revoking_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(revoking_server)
    reasons: list[SignOutReason | None] = []
    with sdk(revoking_server) as phone:
        phone.on("signed_out", lambda e: reasons.append(e.reason))
        phone.login(username=user, password=PASSWORD)
        r = httpx.post(revoking_server.base_url + "/v1/auth/refresh",
                       json={"refresh_token": phone._core.tokens.refresh_token})
        assert r.status_code == 400 and r.json()["code"] == "invalid_dpop_proof"
        with pytest.raises(SessionRevokedError) as ended:
            phone.refresh_now()
        assert ended.value.reason == "stolen"
    assert reasons == [SignOutReason.STOLEN]


def test_a_copied_access_token_is_refused_without_a_proof_by_its_key(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as phone:
        phone.login(username=user, password=PASSWORD)
        access = phone._core.tokens.access_token
        url = live_server.base_url + "/v1/me"
        for scheme in ("DPoP", "Bearer"):
            r = httpx.get(url, headers={"Authorization": f"{scheme} {access}"})
            assert r.status_code == 401, scheme
        # The SDK's own proof, lifted off one request, does not serve another.
        with _thief(live_server, sdk, phone._core.tokens.refresh_token) as other:
            other._prover.key.signer(create=True)  # the second device has a key of its own
            other._core.tokens = phone._core.tokens  # the stolen access token, other's key
            with pytest.raises(DPoPProofRefusedError) as refused:
                other.get("/v1/me")
            assert refused.value.status == 401 and refused.value.code == "invalid_dpop_proof"
        assert phone.get("/v1/me").status_code == 200


# -- replays, nonces, clocks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(module_server_factory: Callable[..., ServerProcess]
            ) -> Iterator[tuple[ServerProcess, LoopbackProxy]]:
    """A server behind a lossy proxy; its public URL (``LATCHKEY_ISSUER``, which ``htu`` is
    checked against) is the proxy's, as a server behind a load balancer is configured."""
    port = free_port()
    server = module_server_factory(issuer=f"http://127.0.0.1:{port}")
    proxy = LoopbackProxy(server.base_url)
    proxy.port = port
    proxy.start()
    yield server, proxy
    proxy.stop()


def test_a_lost_refresh_is_replayed_with_a_fresh_proof_and_the_session_survives(
    proxied: tuple[ServerProcess, LoopbackProxy], sdk: Sdk
) -> None:
    server, proxied = proxied
    proxied.seen.clear()
    user = make_user(server)
    with sdk(proxied.base_url) as client:
        client.login(username=user, password=PASSWORD)
        session = client.session.session_id
        proxied.drop_responses["/v1/auth/refresh"] = 1  # rotated on the server, never heard
        client.refresh_now()
        assert client.get("/v1/me").json()["session_id"] == session
    sent = proxied.requests("/v1/auth/refresh")
    assert len(sent) >= 2 and sent[0].json() == sent[1].json()  # the same token replayed
    proofs = [s.headers["dpop"] for s in sent]
    assert len({_claims(p)["jti"] for p in proofs}) == len(proofs)  # each proof fresh
    assert len({jwk_thumbprint(_header(p)["jwk"]) for p in proofs}) == 1  # one key


def test_a_server_nonce_is_learnt_with_one_retry_and_used_after(
    nonce_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(nonce_server)
    with sdk(nonce_server) as client:
        client.login(username=user, password=PASSWORD)  # refused once: use_dpop_nonce
        assert client._prover.state.nonce_for(httpx.URL(nonce_server.base_url))
        assert client.get("/v1/me").status_code == 200
        client.refresh_now()
        assert client.get("/v1/me").status_code == 200


def test_a_device_clock_ten_minutes_off_is_corrected_from_the_servers_date(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        # The phone's wall clock is ten minutes slow; the proof's iat would be refused.
        client._prover.state = ProofState(wall_clock=lambda: time.time() - 600)
        client.login(username=user, password=PASSWORD)  # one retry, on the server's Date
        assert abs(client._prover.state.offset_seconds - 600) < 5
        assert client.get("/v1/me").status_code == 200
        client.refresh_now()
        assert client.get("/v1/me").status_code == 200


# -- exactly one retry, whatever the server keeps saying ------------------------------------


class _Refuser(BaseHTTPRequestHandler):
    """A server that refuses every login proof: a new nonce each time, or a far clock."""

    mode = "nonce"
    proofs: list[str] = []

    def do_POST(self) -> None:
        type(self).proofs.append(self.headers.get("DPoP", ""))
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        code = "use_dpop_nonce" if self.mode == "nonce" else "invalid_dpop_proof"
        body = json.dumps({"code": code, "status": 400, "title": "refused"}).encode()
        self.send_response_only(400)  # no Date of http.server's own: ours, below
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("DPoP-Nonce", f"nonce-{len(type(self).proofs)}")
        ahead = datetime.now(UTC) + timedelta(minutes=10 * len(type(self).proofs))
        self.send_header("Date", format_datetime(ahead, usegmt=True))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["nonce", "clock"])
def test_a_server_that_keeps_refusing_gets_exactly_one_retry(mode: str, sdk: Sdk) -> None:
    _Refuser.mode, _Refuser.proofs = mode, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sdk(f"http://127.0.0.1:{server.server_port}") as client:
            with pytest.raises(DPoPProofRefusedError):
                client.login(username="someone", password=PASSWORD)
    finally:
        server.shutdown()
        server.server_close()
    first, second = (_claims(p) for p in _Refuser.proofs)  # two requests, no more
    assert first["jti"] != second["jti"]
    if mode == "nonce":
        assert "nonce" not in first and second["nonce"] == "nonce-1"
    else:
        assert 590 <= second["iat"] - first["iat"] <= 610  # the corrected clock
