"""Model-check the session life cycle against a real server and a real redis-server.

A Hypothesis ``RuleBasedStateMachine`` signs in, refreshes, replays old refresh tokens
inside and after the grace window, logs out, steps up, changes passwords and waits past
timeouts, keeping a model of what each session should be. After every step it checks the
invariants security depends on:

- a refresh token has at most one successor, ever (every 200 for it carries the same one);
- an ended session never comes back (neither its refresh nor its access tokens work);
- the absolute limit is never extended (``absolute_expires_in`` never grows);
- an access token of an ended session is refused on the next request.

Time is real (short timeouts, real sleeps). Near a deadline the model accepts either
outcome and learns the server's answer, since the idle clock is touched at most once a
second by design.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import PASSWORD, start_server, unique_username

IDLE_S, ABSOLUTE_S, ACCESS_S, GRACE_S = 4.0, 9.0, 3.0, 1.0
MARGIN_S = 1.3  # idle clock granularity (1 s) plus scheduling slack


@dataclass
class ModelSession:
    """What the model believes about one session."""

    session_id: str
    access_token: str
    chain: list[str]  # refresh tokens, oldest first; chain[-1] is current
    successors: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    last_seen: float = 0.0
    absolute_left: float = ABSOLUTE_S
    rotated_at: float = 0.0
    ended: bool = False

    def near_deadline(self, now: float) -> bool:
        idle_gap = abs((now - self.last_seen) - IDLE_S)
        absolute_gap = abs((now - self.created) - ABSOLUTE_S)
        return min(idle_gap, absolute_gap) < MARGIN_S

    def expired(self, now: float) -> bool:
        return now - self.last_seen >= IDLE_S or now - self.created >= ABSOLUTE_S


class SessionMachine(RuleBasedStateMachine):
    """Rules drive the real server; the model predicts; invariants compare."""

    server_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=self.server_url, timeout=15)
        self.username = unique_username("model")
        self.password = PASSWORD
        r = self.http.post("/v1/auth/register", json={"username": self.username,
                                                      "password": self.password})
        assert r.status_code == 201
        self.sessions: list[ModelSession] = []

    def teardown(self) -> None:
        self.http.close()

    # -- helpers ------------------------------------------------------------------------
    def _adopt(self, body: dict) -> ModelSession:
        now = time.monotonic()
        session = ModelSession(body["session_id"], body["access_token"],
                               [body["refresh_token"]], created=now, last_seen=now,
                               absolute_left=body["absolute_expires_in"])
        self.sessions.append(session)
        return session

    def _live(self) -> list[ModelSession]:
        return [s for s in self.sessions if not s.ended]

    def _end_if_expired(self, session: ModelSession, response: httpx.Response) -> bool:
        """Accept an expiry the model saw coming (or was too close to call)."""
        now = time.monotonic()
        if response.status_code == 401 and response.json()["code"] == "session_expired":
            assert session.expired(now) or session.near_deadline(now), response.json()
            session.ended = True
            return True
        return False

    def _refused_for_time(self, session: ModelSession, response: httpx.Response) -> bool:
        """Accept a re-authentication refused because time ran out (the access token or
        the session expired on the way); any other refusal fails the model."""
        if response.status_code != 401:
            return False
        assert response.json()["code"] in ("session_expired", "token_expired"), response.text
        self._end_if_expired(session, response)
        return True

    # -- rules --------------------------------------------------------------------------
    @initialize()
    def sign_in_first(self) -> None:
        self.sign_in()

    @rule()
    def sign_in(self) -> None:
        r = self.http.post("/v1/auth/login", json={"username": self.username,
                                                   "password": self.password})
        assert r.status_code == 200, r.text
        self._adopt(r.json())

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def refresh_current(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live()))
        token = session.chain[-1]
        r = self.http.post("/v1/auth/refresh", json={"refresh_token": token})
        if self._end_if_expired(session, r):
            return
        now = time.monotonic()
        assert r.status_code == 200, (r.text, session.expired(now))
        body = r.json()
        assert body["session_id"] == session.session_id
        assert body["absolute_expires_in"] <= session.absolute_left  # never extended
        if token in session.successors:
            assert session.successors[token] == body["refresh_token"]
        session.successors[token] = body["refresh_token"]
        session.chain.append(body["refresh_token"])
        session.access_token = body["access_token"]
        session.absolute_left = body["absolute_expires_in"]
        session.last_seen = session.rotated_at = now

    @precondition(lambda self: any(len(s.chain) > 1 for s in self._live()))
    @rule(data=st.data())
    def replay_previous(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from([s for s in self._live() if len(s.chain) > 1]))
        previous = session.chain[-2]
        sent = time.monotonic()
        r = self.http.post("/v1/auth/refresh", json={"refresh_token": previous})
        if self._end_if_expired(session, r):
            return
        age = sent - session.rotated_at
        if r.status_code == 200:
            # Inside the grace window: the very same successor, never a new branch.
            assert age < GRACE_S + MARGIN_S
            assert r.json()["refresh_token"] == session.successors[previous]
            session.last_seen = time.monotonic()
        else:
            assert r.json()["code"] == "refresh_token_reused", r.text
            assert age > GRACE_S - 0.2
            session.ended = True

    @precondition(lambda self: any(len(s.chain) > 1 for s in self._live()))
    @rule(data=st.data())
    def attacker_replays_after_grace(self, data: st.DataObject) -> None:
        """A thief who copied the previous token uses it once the grace window is over."""
        session = data.draw(st.sampled_from([s for s in self._live() if len(s.chain) > 1]))
        time.sleep(max(0.0, session.rotated_at + GRACE_S + 0.3 - time.monotonic()))
        r = self.http.post("/v1/auth/refresh", json={"refresh_token": session.chain[-2]})
        if self._end_if_expired(session, r):
            return
        assert r.status_code == 401 and r.json()["code"] == "refresh_token_reused", r.text
        session.ended = True

    @precondition(lambda self: any(len(s.chain) > 2 for s in self._live()))
    @rule(data=st.data())
    def replay_ancestor(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from([s for s in self._live() if len(s.chain) > 2]))
        r = self.http.post("/v1/auth/refresh", json={"refresh_token": session.chain[0]})
        if self._end_if_expired(session, r):
            return
        assert r.status_code == 401 and r.json()["code"] == "refresh_token_reused", r.text
        session.ended = True

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def logout(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live()))
        r = self.http.post("/v1/auth/logout", json={"refresh_token": session.chain[-1]})
        assert r.status_code == 204
        session.ended = True

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def step_up(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live()))
        r = self.http.post("/v1/auth/reauth", json={"password": self.password},
                           headers={"Authorization": f"Bearer {session.access_token}"})
        if self._refused_for_time(session, r):
            return
        assert r.status_code == 200, r.text
        assert r.json()["session_id"] != session.session_id
        session.ended = True
        self._adopt(r.json())

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def change_password(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self._live()))
        new_password = PASSWORD + f" {len(self.sessions)}"
        r = self.http.post("/v1/auth/password",
                           json={"current_password": self.password,
                                 "new_password": new_password},
                           headers={"Authorization": f"Bearer {session.access_token}"})
        if self._refused_for_time(session, r):
            return
        assert r.status_code == 200, r.text
        self.password = new_password
        for other in self.sessions:
            other.ended = True
        self._adopt(r.json())

    @rule(seconds=st.sampled_from([0.6, 1.2]))
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)
        now = time.monotonic()
        for session in self._live():
            if session.expired(now) and not session.near_deadline(now):
                session.ended = True

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def ended_sessions_never_come_back(self) -> None:
        for session in self.sessions:
            if not session.ended:
                continue
            r = self.http.get("/v1/me",
                              headers={"Authorization": f"Bearer {session.access_token}"})
            assert r.status_code == 401, (session.session_id, r.text)
            r = self.http.post("/v1/auth/refresh", json={"refresh_token": session.chain[-1]})
            assert r.status_code == 401, r.text


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, redis_server):
    server = start_server(tmp_path_factory.mktemp("model"), {
        "LATCHKEY_IDLE_TIMEOUT": str(int(IDLE_S)),
        "LATCHKEY_ABSOLUTE_TIMEOUT": str(int(ABSOLUTE_S)),
        "LATCHKEY_ACCESS_TOKEN_TTL": str(int(ACCESS_S)),
        "LATCHKEY_REFRESH_REUSE_GRACE": str(int(GRACE_S)),
        "LATCHKEY_MAX_SESSIONS_PER_USER": "50",
        "LATCHKEY_BINDING_POLICY": "off",
        "LATCHKEY_LOG_LEVEL": "WARNING",
    }, redis_url=redis_server.url)
    yield server
    server.stop()


def test_session_life_cycle_keeps_its_invariants(model_server):
    SessionMachine.server_url = model_server.base_url
    run_state_machine_as_test(SessionMachine, settings=settings(
        max_examples=8, stateful_step_count=12, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
