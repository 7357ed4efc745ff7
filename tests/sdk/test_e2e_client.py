"""The SDK against the real server on loopback (real redis-server): the everyday API,
typed failures, and the transport rules that keep tokens where they belong (S2, S3, X2, L1).

Every test runs once with the sync and once with the async client (the ``sdk`` fixture).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from latchkey_client import (
    InsecureRequestError,
    InvalidCredentialsError,
    NetworkError,
    NetworkTimeoutError,
    NotSignedInError,
    RateLimitedError,
    SessionRevokedError,
    SignOutReason,
    StepUpRequiredError,
    UsernameTakenError,
    WeakPasswordError,
)

from tests.conftest import ServerProcess, free_port, unique_username

from .conftest import PASSWORD, Sdk, make_user, me_status


def test_login_call_and_logout_round_trip(live_server: ServerProcess, sdk: Sdk) -> None:
    user = make_user(live_server)
    events: list[str] = []
    with sdk(live_server) as client:
        client.on("signed_in", lambda e: events.append(e.name.value))
        client.on("signed_out", lambda e: events.append(f"out:{e.reason}"))
        info = client.login(username=user, password=PASSWORD)
        me = client.get("/v1/me").json()
        assert me["username"] == user and me["session_id"] == info.session_id
        assert [s.current for s in client.sessions()] == [True]
        result = client.logout()
        assert result.server_confirmed and not result.pending
        assert not client.is_signed_in
        with pytest.raises(NotSignedInError):
            client.get("/v1/me")
    assert events == ["signed_in", "out:user"]


def test_logout_ends_the_session_on_the_server_at_once(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        client.login(username=user, password=PASSWORD)
        access = client._core.tokens.access_token  # white-box: the token the server must now refuse
        refresh = client._core.tokens.refresh_token
        client.logout()
        # Asked as the holder would ask (with a proof by its key): the session is over.
        assert me_status(live_server, access) == 401
    r = httpx.post(live_server.base_url + "/v1/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 401


def test_account_errors_are_typed(live_server: ServerProcess, sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        with pytest.raises(InvalidCredentialsError) as wrong:
            client.login(username=user, password="not the password at all")
        assert wrong.value.status == 401 and PASSWORD not in str(wrong.value)
        with pytest.raises(UsernameTakenError):
            client.register(username=user, password=PASSWORD)
        with pytest.raises(WeakPasswordError):
            client.register(username=unique_username(), password="short")


def test_brute_force_is_rate_limited_with_retry_after(live_server: ServerProcess, sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server, max_retries=0) as client:
        with pytest.raises(RateLimitedError) as limited:
            for _ in range(30):
                with pytest.raises((InvalidCredentialsError, RateLimitedError)) as each:
                    client.login(username=user, password="wrong password number one")
                if isinstance(each.value, RateLimitedError):
                    raise each.value
        assert limited.value.retry_after_seconds and limited.value.retry_after_seconds > 0


def test_unreachable_server_is_a_typed_network_error_chained_to_its_cause(sdk: Sdk) -> None:
    with sdk(f"http://127.0.0.1:{free_port()}", total_timeout_seconds=2) as client:
        with pytest.raises(NetworkError) as caught:
            client.register(username="someone", password=PASSWORD)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_server_that_never_answers_times_out_within_the_total_deadline(
    live_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(live_server)
    proxy.stall = True
    with sdk(proxy.base_url, timeout=httpx.Timeout(0.3), total_timeout_seconds=1.5) as client:
        with pytest.raises(NetworkTimeoutError) as caught:
            client.login(username="nobody", password=PASSWORD)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert proxy.count("/v1/auth/login") == 1  # a login is not idempotent: sent once


def test_token_like_query_parameter_is_refused_before_anything_is_sent(
    live_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(live_server)
    user = make_user(live_server)
    with sdk(proxy.base_url) as client:
        client.login(username=user, password=PASSWORD)
        before = len(proxy.seen)
        for name in ("access_token", "refresh_token", "sid"):
            with pytest.raises(InsecureRequestError):
                client.get(f"/v1/me?{name}=x")
        with pytest.raises(InsecureRequestError):
            client.get("/v1/me", params={"token": "x"})
        assert len(proxy.seen) == before
        client.logout()


class _Recorder(BaseHTTPRequestHandler):
    """A foreign origin: records the headers it receives."""

    received: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).received.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_authorization_never_goes_to_another_origin_even_by_redirect(
    live_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    foreign = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    foreign_url = f"http://127.0.0.1:{foreign.server_address[1]}/collect"
    _Recorder.received = []
    proxy = proxy_to(live_server)
    proxy.redirects["/v1/redirect-me"] = foreign_url
    user = make_user(live_server)
    try:
        with sdk(proxy.base_url) as client:
            client.login(username=user, password=PASSWORD)
            # The SDK's own client does not follow redirects at all.
            assert client.get("/v1/redirect-me").status_code == 302
            # An app's own httpx client with the SDK's auth: a different origin gets no
            # token, directly or through a redirect from the Latchkey origin.
            client.app_get(foreign_url, follow_redirects=True)
            client.app_get(proxy.base_url + "/v1/redirect-me", follow_redirects=True)
            assert client.app_get(proxy.base_url + "/v1/me").status_code == 200
            client.logout()
    finally:
        foreign.shutdown()
    assert len(_Recorder.received) == 2
    assert all("authorization" not in h for h in _Recorder.received)
    assert proxy.requests("/v1/me")[-1].headers["authorization"].startswith("Bearer ")


def test_sessions_can_be_listed_and_ended_remotely(live_server: ServerProcess, sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server, device_name="phone") as phone, sdk(live_server) as laptop:
        phone.login(username=user, password=PASSWORD)
        laptop.login(username=user, password=PASSWORD)
        signed_out: list[SignOutReason | None] = []
        phone.on("signed_out", lambda e: signed_out.append(e.reason))
        listed = laptop.sessions()
        assert len(listed) == 2
        assert sum(s.current for s in listed) == 1
        other = next(s for s in listed if not s.current)
        assert other.device_name == "phone" and other.created_at is not None
        laptop.revoke_session(other.session_id)
        with pytest.raises(SessionRevokedError):
            phone.get("/v1/me")
        assert not phone.is_signed_in and signed_out == [SignOutReason.REMOTE]
        laptop.revoke_session(laptop.session.session_id)  # type: ignore[union-attr]
        assert not laptop.is_signed_in


def test_logout_all_others_keeps_this_session_and_ends_the_rest(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as a, sdk(live_server) as b, sdk(live_server) as c:
        for client in (a, b, c):
            client.login(username=user, password=PASSWORD)
        a.logout_all(scope="others")
        assert a.get("/v1/me").status_code == 200
        for client in (b, c):
            with pytest.raises(SessionRevokedError):
                client.get("/v1/me")
        a.logout_all()
        assert not a.is_signed_in


def test_step_up_then_sensitive_action(live_server: ServerProcess, sdk: Sdk) -> None:
    user = make_user(live_server)
    with sdk(live_server) as client:
        first = client.login(username=user, password=PASSWORD)
        with pytest.raises(StepUpRequiredError):
            client.post("/v1/me/sensitive", json={})
        elevated = client.reauthenticate(password=PASSWORD)
        assert elevated.auth_level == "elevated"
        assert elevated.session_id != first.session_id
        assert client.post("/v1/me/sensitive", json={}).json() == {"ok": True}
        client.logout()


def test_password_change_elsewhere_signs_this_device_out_with_that_reason(
    live_server: ServerProcess, sdk: Sdk
) -> None:
    user = make_user(live_server)
    with sdk(live_server) as phone, sdk(live_server) as laptop:
        phone.login(username=user, password=PASSWORD)
        laptop.login(username=user, password=PASSWORD)
        reasons: list[SignOutReason | None] = []
        phone.on("signed_out", lambda e: reasons.append(e.reason))
        new_password = PASSWORD + " v2"
        laptop.change_password(current_password=PASSWORD, new_password=new_password)
        assert laptop.get("/v1/me").status_code == 200
        with pytest.raises(SessionRevokedError) as caught:
            phone.get("/v1/me")
        assert caught.value.reason == "password_change"
        assert reasons == [SignOutReason.PASSWORD_CHANGE]
        laptop.logout()
