"""T5 withdrawal: ``latchkey-server keys withdraw KID`` takes a compromised signing key out
of service at once. From the very next request, in every worker, every token it signed is
refused (401 ``invalid_token``), verified-token caches included, and the key is gone from
the JWKS; the published next key signs instead, and sessions stay live: the SDK refreshes
once and carries on. The key ring unit tests show the states a withdrawal moves between.
End to end against running servers (two gunicorn workers) and redis-server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from latchkey_client import AsyncLatchkeyClient, LatchkeyClient
from latchkey_server.config import load_settings
from latchkey_server.errors import InvalidToken
from latchkey_server.keys import HmacKeys, KeyRing, KeyStatus
from latchkey_server.tokens import TokenService, new_session_id, new_user_id

from tests.conftest import PASSWORD, Api, ServerProcess
from tests.server.test_key_rotation import audit_lines, eventually, jwks_kids, keys_command, kid


# -- the key ring --------------------------------------------------------------------------
def ring_at(path: Path) -> KeyRing:
    return KeyRing(load_settings({}, {"instance_path": path}))


def test_withdrawing_the_current_key_promotes_the_next_and_publishes_a_new_one(tmp_path):
    ring = ring_at(tmp_path)
    withdrawn, promoted = ring.current, ring.next
    assert promoted is not None
    outcome = ring.withdraw(withdrawn.kid)
    assert outcome.promoted and not outcome.already_withdrawn
    assert ring.current.kid == promoted.kid == outcome.current.kid
    assert ring.next is not None and ring.next.kid not in (withdrawn.kid, promoted.kid)
    assert ring.verification_key(withdrawn.kid) is None
    assert [k["kid"] for k in ring.jwks()["keys"]] == [promoted.kid, ring.next.kid]
    # The private key is deleted; the manifest keeps the record, so the listing shows it.
    assert not (tmp_path / "keys" / f"{withdrawn.kid}.pem").exists()
    statuses = {e["kid"]: e["status"] for e in ring.listing()}
    assert statuses[withdrawn.kid] == KeyStatus.WITHDRAWN
    # Withdrawing it again changes nothing and says so.
    again = ring.withdraw(withdrawn.kid)
    assert again.already_withdrawn and ring.current.kid == promoted.kid


def test_another_process_sees_a_withdrawal_on_its_very_next_use(tmp_path):
    """A worker's ring notices within the same second, without waiting for the
    once-a-second look at the manifest's time: the generation counter told it."""
    operator, worker = ring_at(tmp_path), ring_at(tmp_path)
    old = worker.current
    assert worker.verification_key(old.kid) is old  # the worker has just looked
    operator.withdraw(old.kid)
    assert worker.verification_key(old.kid) is None
    assert worker.current.kid == operator.current.kid != old.kid


def test_a_token_cached_as_verified_is_refused_once_its_key_is_withdrawn(tmp_path):
    """The verified-token cache keeps the signature result, never the trust in its key."""
    settings = load_settings({}, {"instance_path": tmp_path})
    ring = KeyRing(settings)
    tokens = TokenService(settings, ring, HmacKeys(settings))
    token = tokens.issue_access_token(new_user_id(), new_session_id(), "normal",
                                      int(time.time()))
    tokens.verify_access_token(token)
    tokens.verify_access_token(token)  # a cache hit
    ring_at(tmp_path).withdraw(kid(token))  # another process: the operator's command
    with pytest.raises(InvalidToken):
        tokens.verify_access_token(token)
    with pytest.raises(InvalidToken):
        tokens.verify_access_token(token, allow_expired=True)
    fresh = tokens.issue_access_token(new_user_id(), new_session_id(), "normal",
                                      int(time.time()))
    assert kid(fresh) == ring.current.kid != kid(token)
    assert tokens.verify_access_token(fresh).expires_at > time.time()


def test_withdrawing_the_next_or_a_retired_key_keeps_the_current_one(tmp_path):
    ring = ring_at(tmp_path)
    first = ring.current
    second = ring.rotate()  # first is retired now, still verifying
    assert ring.verification_key(first.kid) is not None
    ring.withdraw(first.kid)
    assert ring.verification_key(first.kid) is None and ring.current.kid == second.kid
    upcoming = ring.next
    assert upcoming is not None
    outcome = ring.withdraw(upcoming.kid)
    assert not outcome.promoted and ring.current.kid == second.kid
    assert ring.next is not None and ring.next.kid != upcoming.kid  # one is published ahead


def test_withdrawing_the_only_signing_key_without_a_next_one_is_refused(tmp_path):
    """The manifest an older version's ``keys rotate`` writes has no next key (and no
    statuses): withdrawing its one current key would leave nothing to sign with."""
    ring = ring_at(tmp_path)
    only = ring.current
    manifest = tmp_path / "keys" / "manifest.json"
    manifest.write_text(json.dumps({"keys": [
        {"kid": only.kid, "created_at": only.created_at, "retired_at": None}]}))
    ring.reload()
    with pytest.raises(ValueError, match="no next key"):
        ring.withdraw(only.kid)
    assert ring.current.kid == only.kid and ring.verification_key(only.kid) is not None
    with pytest.raises(ValueError, match="no signing key has that kid"):
        ring.withdraw("not-a-kid")


def test_an_instance_from_before_next_keys_gets_one_at_start_and_keeps_its_key(tmp_path):
    first = ring_at(tmp_path).current
    manifest = tmp_path / "keys" / "manifest.json"
    manifest.write_text(json.dumps({"keys": [
        {"kid": first.kid, "created_at": first.created_at, "retired_at": None}]}))
    ring = ring_at(tmp_path)
    assert ring.current.kid == first.kid
    assert ring.next is not None and ring.next.kid != first.kid


# -- a running server ------------------------------------------------------------------------
def worker_pid(server: ServerProcess, request_id: str) -> int:
    """Return the pid of the worker whose access log line carries ``request_id``."""
    found: list[int] = []

    def logged() -> bool:
        found[:] = [line["pid"] for line in map(json.loads, filter(
            lambda text: request_id in text, server.logs().splitlines()))
            if line.get("logger") == "latchkey.access"]
        return bool(found)

    eventually(logged)
    return found[0]


def me(http: httpx.Client, access_token: str) -> tuple[httpx.Response, str]:
    request_id = uuid.uuid4().hex
    r = http.get("/v1/me", headers={"Authorization": f"Bearer {access_token}",
                                    "X-Request-ID": request_id})
    return r, request_id


def connections_to_each_worker(server: ServerProcess, workers: int) -> dict[int, httpx.Client]:
    """Open keep-alive connections until one is held to each worker (gthread keeps a
    connection on the worker that accepted it)."""
    pinned: dict[int, httpx.Client] = {}
    for _ in range(40):
        http = server.client(limits=httpx.Limits(max_connections=1))
        request_id = uuid.uuid4().hex
        assert http.get("/healthz", headers={"X-Request-ID": request_id}).status_code == 200
        pid = worker_pid(server, request_id)
        if pid in pinned:
            http.close()
            continue
        pinned[pid] = http
        if len(pinned) == workers:
            return pinned
    raise AssertionError(f"connections reached {len(pinned)} of {workers} workers")


def test_a_withdrawn_key_is_refused_on_the_very_next_request_in_every_worker(server_factory):
    """Each worker has the token cached as verified and is being asked about it right up
    to the withdrawal (so a once-a-second check would still trust it); every request sent
    after the command returns is refused, on both workers, and the JWKS drops the key."""
    server = server_factory(workers=2, keepalive=120)
    api = Api(server.base_url)
    pinned = connections_to_each_worker(server, workers=2)
    try:
        _, tokens = api.new_user_session()
        token = tokens["access_token"]
        old_kid = kid(token)
        next_kid = jwks_kids(server)[1]
        for http in pinned.values():
            for _ in range(2):  # the second answer comes from the worker's cache
                assert me(http, token)[0].status_code == 200

        done = threading.Event()
        done_at = [0.0]
        seen: dict[int, list[tuple[float, int, str, str]]] = {pid: [] for pid in pinned}

        def keep_asking(pid: int, http: httpx.Client) -> None:
            after = 0
            while after < 3:
                sent_at = time.monotonic()
                r, request_id = me(http, token)
                code = r.json().get("code", "") if r.status_code != 200 else ""
                seen[pid].append((sent_at, r.status_code, code, request_id))
                if done.is_set() and sent_at > done_at[0]:
                    after += 1

        askers = [threading.Thread(target=keep_asking, args=item) for item in pinned.items()]
        for t in askers:
            t.start()
        eventually(lambda: all(seen.values()))
        started_at = time.monotonic()
        try:
            r = keys_command(server, "withdraw", "--", old_kid)
        finally:
            done_at[0] = time.monotonic()
            done.set()
            for t in askers:
                t.join(timeout=60)
        assert r.returncode == 0, r.stderr
        audit = audit_lines(r.stderr)
        assert audit[0]["action"] == "keys_withdraw" and audit[0]["kid"] == old_kid
        assert audit[0]["promoted"] is True and audit[0]["current_kid"] == next_kid

        for pid, answers in seen.items():
            # Trusted (from the cache) until the operator acted...
            before = [status for sent_at, status, _, _ in answers if sent_at < started_at]
            assert before and set(before) == {200}, pid
            # ...refused on every request sent after the command returned.
            after = [a for a in answers if a[0] > done_at[0]]
            assert len(after) == 3
            assert [(status, code) for _, status, code, _ in after] == \
                [(401, "invalid_token")] * 3, (pid, after)
            assert worker_pid(server, after[0][3]) == pid  # answered by this worker

        kids = jwks_kids(server)
        assert old_kid not in kids and kids[0] == next_kid and len(kids) == 2
        # The session is live: a refresh gets a token signed by the promoted key, accepted
        # on both workers.
        tokens = api.refresh(tokens["refresh_token"]).json()
        assert kid(tokens["access_token"]) == next_kid
        for http in pinned.values():
            assert me(http, tokens["access_token"])[0].status_code == 200
    finally:
        for http in pinned.values():
            http.close()
        api.close()


def test_keys_withdraw_refuses_an_unknown_kid_without_a_traceback(server_factory):
    server = server_factory()
    r = keys_command(server, "withdraw", "--", "no-such-kid")
    assert r.returncode == 1 and "no signing key has that kid" in r.stderr
    assert "Traceback" not in r.stderr
    listed = keys_command(server, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    statuses = [json.loads(line)["status"] for line in listed.stdout.splitlines()]
    assert sorted(statuses) == ["current", "next"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_sdk_stays_signed_in_across_a_withdrawal_with_one_refresh(server_factory, kind):
    server = server_factory()
    username = Api(server.base_url).register()

    def withdraw_current(client: Any) -> None:
        r = keys_command(server, "withdraw", "--", kid(client._core.tokens.access_token))
        assert r.returncode == 0, r.stderr

    if kind == "sync":
        with LatchkeyClient(base_url=server.base_url, idle_logout=False) as client:
            client.login(username=username, password=PASSWORD)
            assert client.get("/v1/me").status_code == 200
            withdraw_current(client)
            assert client.get("/v1/me").status_code == 200
            assert client.auth.refresh_requests == 1 and client.is_signed_in
        return

    async def run() -> None:
        client = AsyncLatchkeyClient(base_url=server.base_url, idle_logout=False)
        try:
            await client.login(username=username, password=PASSWORD)
            assert (await client.get("/v1/me")).status_code == 200
            await asyncio.to_thread(withdraw_current, client)
            assert (await client.get("/v1/me")).status_code == 200
            assert client.auth.refresh_requests == 1 and client.is_signed_in
        finally:
            await client.aclose()

    asyncio.run(run())
