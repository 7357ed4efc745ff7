"""The session service decides without a web framework: these are the calls an OAuth face
or a resource server would make, on a real redis-server, with no Flask app and no request.
Every life-cycle event of an ended session comes from the service's one reason-to-event
map, and the binding policy of a refresh is the script's, in the same round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flask
import pytest
from latchkey_server.config import load_settings
from latchkey_server.errors import RefreshTokenReused, SessionExpired, SessionRevoked
from latchkey_server.events import EventLog
from latchkey_server.keys import HmacKeys, KeyRing, ensure_key_material
from latchkey_server.redis_connection import connect
from latchkey_server.sessions import Client, SessionService
from latchkey_server.store import Revocation, SessionStore
from latchkey_server.tokens import TokenService

from tests.conftest import RedisProcess, start_redis, unique_username
from tests.server.store_support import age_session

PHONE = Client(device_id="device-A-1234", user_agent="LatchkeyDemo/1.0 (Android 14)",
               ip="203.0.113.7")
IDLE_S = 60


@dataclass
class Harness:
    """The service and what a test needs beside it: the token service and the events."""

    sessions: SessionService
    tokens: TokenService
    store: SessionStore
    lifecycle: list[tuple[str, dict[str, Any]]]
    security: list[tuple[str, dict[str, Any]]]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.lifecycle + self.security if event == name]


class _Collect(logging.Handler):
    def __init__(self, into: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(logging.INFO)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append((record.getMessage(), {k[3:]: v for k, v in vars(record).items()
                                                 if k.startswith("lk_")}))


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.stop()


@pytest.fixture
def harness(tmp_path: Path, own_redis: RedisProcess) -> Iterator[Harness]:
    """Build the service the way ``extension.init_app`` does, without building an app."""
    settings = load_settings({}, {"instance_path": tmp_path / "instance",
                                  "redis_url": own_redis.url, "binding_policy": "enforce",
                                  "refresh_reuse_grace_seconds": 0,
                                  "idle_timeout_seconds": IDLE_S,
                                  "access_token_ttl_seconds": IDLE_S})
    ensure_key_material(settings)
    hmac_keys = HmacKeys(settings)
    tokens = TokenService(settings, KeyRing(settings), hmac_keys)
    events = EventLog(hmac_keys.log_pseudonym)
    store = SessionStore(connect(settings, own_redis.url), settings)
    lifecycle: list[tuple[str, dict[str, Any]]] = []
    security: list[tuple[str, dict[str, Any]]] = []
    events.add_sink(lambda event, fields: security.append((event, fields)))
    # Another test may have built an app, whose logging setup stops propagation.
    logger = logging.getLogger("latchkey.events")
    handler, level = _Collect(lifecycle), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield Harness(SessionService(settings, store, tokens, events), tokens, store,
                      lifecycle, security)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _signed_in(h: Harness) -> tuple[str, Any]:
    user_id = h.sessions.register(unique_username(), "$argon2id$not-checked-here")
    return user_id, h.sessions.issue(user_id=user_id, auth_level="normal", client=PHONE,
                                     device_name="Pixel 8")


def test_the_service_issues_verifies_rotates_and_detects_reuse_outside_any_request(harness):
    assert not flask.has_request_context()
    user_id, grant = _signed_in(harness)
    assert grant.user_id == user_id and grant.auth_level == "normal"
    # The grant carries tokens; its repr does not.
    assert grant.access_token not in repr(grant)
    assert grant.refresh_token.value not in repr(grant)

    principal = harness.sessions.verify(harness.tokens.verify_access_token(grant.access_token),
                                        PHONE)
    assert (principal.user_id, principal.session_id) == (user_id, grant.session_id)

    rotated = harness.sessions.rotate(grant.refresh_token, PHONE)
    assert rotated.session_id == grant.session_id
    assert rotated.refresh_token.generation == grant.refresh_token.generation + 1
    assert [e["generation"] for e in harness.events("session_refreshed")] == [1]

    time.sleep(0.01)  # past the (zero) grace window: the previous token is now a copy
    with pytest.raises(RefreshTokenReused):
        harness.sessions.rotate(grant.refresh_token, PHONE)
    with pytest.raises(SessionRevoked) as refused:
        harness.sessions.verify(harness.tokens.verify_access_token(rotated.access_token), PHONE)
    assert refused.value.extra == {"reason": "reuse"}
    assert len(harness.events("refresh_token_reused")) == 1
    assert [e["reason"] for e in harness.events("session_revoked")] == ["reuse"]


def test_an_enforced_binding_change_ends_the_session_inside_the_refresh(harness):
    _, grant = _signed_in(harness)
    elsewhere = Client(device_id="device-B", user_agent=PHONE.user_agent, ip="198.51.100.9")
    with pytest.raises(SessionRevoked) as refused:
        harness.sessions.rotate(grant.refresh_token, elsewhere)
    assert refused.value.extra == {"reason": "binding"}
    [event] = harness.events("binding_changed")
    assert event["changed"] == "device_id" and event["revoked"] is True
    assert [e["reason"] for e in harness.events("session_revoked")] == ["binding"]
    # Ended for every token, on the original device too; nothing is reported twice.
    with pytest.raises(SessionRevoked):
        harness.sessions.rotate(grant.refresh_token, PHONE)
    assert len(harness.events("binding_changed")) == 1


def test_each_end_reason_raises_its_one_life_cycle_event(harness):
    user_id, mine = _signed_in(harness)
    other = harness.sessions.issue(user_id=user_id, auth_level="normal", client=PHONE)
    idle = harness.sessions.issue(user_id=user_id, auth_level="normal", client=PHONE)
    kept = harness.sessions.issue(user_id=user_id, auth_level="normal", client=PHONE)

    assert harness.sessions.revoke(user_id, mine.session_id, "logout") is Revocation.REVOKED
    assert harness.sessions.revoke(user_id, other.session_id, "admin") is Revocation.REVOKED
    # Idempotent: a second revocation changes nothing and raises no event.
    assert harness.sessions.revoke(user_id, other.session_id, "admin") is Revocation.ENDED
    age_session(harness.store.client, user_id, idle.session_id, (IDLE_S + 1) * 1000)
    ended = harness.sessions.end_all(user_id, scope="others",
                                     current_session_id=kept.session_id)
    assert [(e.reason, e.expired) for e in ended] == [("idle", True)]

    assert len(harness.events("session_logged_out")) == 1
    assert [e["reason"] for e in harness.events("session_revoked")] == ["admin"]
    assert [e["reason"] for e in harness.events("session_expired")] == ["idle"]
    with pytest.raises(SessionExpired):
        harness.sessions.rotate(idle.refresh_token, PHONE)
