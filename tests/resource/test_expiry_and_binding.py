"""The session rules a backend's verifier applies are the token server's, from the one policy
it publishes: the idle clock (touched by the backend's requests too), the absolute end, and
device binding under ``report`` and ``enforce``, with the same security events in the same
stream, naming the session by the same pseudonym."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
from latchkey_resource import InvalidToken, ResourceVerifier, SessionRevoked, TokenExpired
from latchkey_server.config import load_settings
from latchkey_server.events import EventLog
from latchkey_server.keys import HmacKeys

from tests.resource.conftest import DEVICE, Deployment, app_headers, bearer

IDLE_SECONDS = 3


@pytest.fixture(scope="module")
def short(deployment_factory: Callable[..., Deployment]) -> Deployment:
    # The access token lives as long as the idle timeout allows (TTL <= idle).
    return deployment_factory(idle_timeout=IDLE_SECONDS, access_token_ttl=IDLE_SECONDS,
                              absolute_timeout=IDLE_SECONDS + 2)


@pytest.fixture(scope="module")
def enforcing(deployment_factory: Callable[..., Deployment]) -> Deployment:
    return deployment_factory(binding_policy="enforce")


def refresh(deployment: Deployment, refresh_token: str) -> httpx.Response:
    api = deployment.api()
    try:
        api.http.headers["X-Device-Id"] = DEVICE
        return api.refresh(refresh_token)
    finally:
        api.close()


def security_events(deployment: Deployment, event: str) -> list[dict[str, str]]:
    stream = deployment.redis.client().xrange("lk:security-events")
    return [fields for _, fields in stream if fields.get("event") == event]


def pseudonym(deployment: Deployment, session_id: str) -> str:
    """The ``session_ref`` the token server's own events give this session."""
    settings = load_settings({}, {"instance_path": deployment.server.instance_path})
    return EventLog(HmacKeys(settings).log_pseudonym).session_ref(session_id)


def test_backend_requests_touch_the_idle_clock_so_the_session_outlives_its_idle_timeout(
        short):
    verifier = short.verifier()
    tokens = short.sign_in()
    # Times from the token's iat (the sign-in, floored to the second): the touch at least
    # a second after sign-in (the script writes the clock at most once a second) and while
    # the token is good; the refresh past the idle timeout counted from sign-in, inside it
    # counted from the backend's request.
    iat = jwt.decode(tokens["access_token"], options={"verify_signature": False})["iat"]
    sleep_until(iat + 2.05)
    verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    sleep_until(iat + IDLE_SECONDS + 1.05)
    r = refresh(short, tokens["refresh_token"])
    assert r.status_code == 200, r.text


def sleep_until(moment: float) -> None:
    """Sleep until the wall clock reaches ``moment`` (Unix seconds)."""
    time.sleep(max(0.0, moment - time.time()))


def test_an_idle_session_is_refused_and_its_refresh_says_idle(short):
    verifier = short.verifier()
    tokens = short.sign_in()
    time.sleep(IDLE_SECONDS + 0.2)
    # An access token never outlives its session's idle end (TTL <= idle timeout, and every
    # token is issued at a touch): the backend refuses it as expired, the SDK refreshes,
    # and the refresh says why the session is over.
    with pytest.raises(TokenExpired) as refused:
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    assert refused.value.code == "token_expired"
    r = refresh(short, tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_expired"
    assert r.json()["reason"] == "idle"


def test_the_absolute_end_refuses_even_a_session_in_constant_use(short):
    verifier = short.verifier()
    tokens = short.sign_in()
    first = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    started = time.monotonic()
    # Constant use until late in the session, while the first token is still good (its
    # ``exp`` counts from the sign-in, which a loaded machine may have returned late).
    while (time.monotonic() - started < IDLE_SECONDS - 0.5
           and time.time() < first["exp"] - 0.4):
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
        time.sleep(0.3)
    r = refresh(short, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    renewed = r.json()
    absolute_end = first["iat"] + 1 + IDLE_SECONDS + 2  # iat is floored to the second
    # R3: the renewed token never outlives the session's absolute end.
    assert renewed["expires_in"] <= renewed["absolute_expires_in"]
    assert jwt.decode(renewed["access_token"],
                      options={"verify_signature": False})["exp"] <= absolute_end
    # Used constantly until the backend refuses it: as expired, by the absolute end.
    with pytest.raises(TokenExpired):
        while time.time() < absolute_end + 1:
            verifier.verify(bearer(renewed["access_token"]), headers=app_headers())
            time.sleep(0.3)
    while time.time() < absolute_end + 0.2:
        time.sleep(0.2)
    r = refresh(short, renewed["refresh_token"])
    assert r.status_code == 401 and r.json()["reason"] == "absolute"


def test_under_enforce_a_changed_device_ends_the_session_with_the_servers_events(
        enforcing, caplog):
    verifier = enforcing.verifier(service_name="orders-api")
    tokens = enforcing.sign_in()
    assert verifier.verify(bearer(tokens["access_token"]), headers=app_headers()).session_id
    with caplog.at_level(logging.INFO, logger="latchkey.events"), \
            pytest.raises(SessionRevoked) as refused:
        verifier.verify(bearer(tokens["access_token"]),
                        headers=app_headers(**{"X-Device-Id": "someone-elses-laptop"}),
                        remote_addr="198.51.100.7")
    assert refused.value.reason == "binding"
    # Ended for every token of the session, on the token server too.
    with pytest.raises(SessionRevoked):
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    r = refresh(enforcing, tokens["refresh_token"])
    assert r.status_code == 401 and r.json()["reason"] == "binding"
    ref = pseudonym(enforcing, tokens["session_id"])
    (event,) = [e for e in security_events(enforcing, "binding_changed")
                if e["session_ref"] == ref]
    assert event["changed"] == "device_id" and event["revoked"] == "true"
    assert event["policy"] == "enforce" and event["ip"] == "198.51.100.7"
    assert event["service"] == "orders-api"
    ended = [rec for rec in caplog.records if rec.getMessage() == "session_revoked"]
    assert [(rec.lk_session_ref, rec.lk_reason) for rec in ended] == [(ref, "binding")]


def test_under_report_a_changed_device_is_reported_once_across_backend_and_server(
        deployment):
    verifier = deployment.verifier()
    tokens = deployment.sign_in()
    moved = app_headers(**{"User-Agent": "LatchkeyDemo/2.0 (Android 15)"})
    for _ in range(3):
        verifier.verify(bearer(tokens["access_token"]), headers=moved)
    with httpx.Client(base_url=deployment.server.base_url) as c:
        assert c.get("/v1/me", headers={**moved, "Authorization": bearer(
            tokens["access_token"])}).status_code == 200
    ref = pseudonym(deployment, tokens["session_id"])
    reported = [e for e in security_events(deployment, "binding_changed")
                if e["session_ref"] == ref]
    assert len(reported) == 1 and reported[0]["changed"] == "user_agent"
    assert reported[0]["revoked"] == "false"


def test_a_genuine_token_naming_no_session_is_refused_and_raised_as_an_alert(deployment):
    verifier: ResourceVerifier = deployment.verifier()
    tokens = deployment.sign_in()
    # A restored or wiped store: the session's record is gone, the signature still true.
    client = deployment.redis.client()
    for key in client.scan_iter("lk:{u:*}:user"):
        client.hdel(key, f"s:{tokens['session_id']}")
    with pytest.raises(InvalidToken):
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    ref = pseudonym(deployment, tokens["session_id"])
    assert [e for e in security_events(deployment, "unknown_session_token")
            if e["session_ref"] == ref]


def test_a_replayed_token_naming_no_session_writes_a_budget_of_alerts_then_summaries(
        deployment_factory: Callable[..., Deployment]):
    """One genuine token replayed in a loop must not flood the alert stream and evict the
    token server's alerts: its source (the session) writes the published per-source count
    of alerts per window, then only summaries (at 10, 100...), counted in the same keys
    the token server counts in."""
    deployment = deployment_factory(security_events_per_source=3)
    verifier: ResourceVerifier = deployment.verifier()
    tokens = deployment.sign_in()
    client = deployment.redis.client()
    for key in client.scan_iter("lk:{u:*}:user"):
        client.hdel(key, f"s:{tokens['session_id']}")
    for _ in range(25):
        with pytest.raises(InvalidToken):
            verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    ref = pseudonym(deployment, tokens["session_id"])
    written = [e for e in security_events(deployment, "unknown_session_token")
               if e["session_ref"] == ref]
    per_source = int(client.hget("lk:{policy}", "events_per_source"))
    assert per_source == 3  # as the token server published it
    assert len(written) == per_source
    (summary,) = [e for e in security_events(deployment, "security_events_summarised")
                  if e.get("source") == ref]
    assert summary["summarised_event"] == "unknown_session_token"
    assert summary["count"] == "10" and summary["alert"] == "true"
    assert summary["service"] == written[0]["service"]
    # The token server counts the same source in the same counter: one budget for both.
    with httpx.Client(base_url=deployment.server.base_url) as c:
        assert c.get("/v1/me", headers={**app_headers(), "Authorization": bearer(
            tokens["access_token"])}).status_code == 401
    counters = [k for k in client.scan_iter("lk:evb:*") if ref in k]
    assert len(counters) == 1 and int(client.get(counters[0])) == 26
    assert 0 < client.ttl(counters[0]) <= 60
