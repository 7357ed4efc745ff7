"""The chaos workload: many SDK clients refreshing through a lossy network, plus a thief.

Shared by the CI test (``tests/chaos/test_chaos.py``, seconds) and the benchmark
(``bench/chaos.py``, minutes); pytest-free so the benchmark can import it.

The set-up it expects: a real ``latchkey-server`` with a short access-token lifetime (1-2 s,
so every client refreshes every second or so) and a reuse grace window (e.g. 10 s), and a
:class:`tests.netproxy.LoopbackProxy` in front of it. The proxy drops or delays a share of
responses *after* the server acted, which is the case that breaks naive rotation: the server
rotated the refresh token, the phone never heard. The SDK must replay and recover, so:

- **Zero false logouts.** Every honest client is still signed in at the end, in the session
  it logged in with, and that session is still live on the server (a ``/v1/me`` answered 200
  with the same ``session_id``). Any ``signed_out`` event, or ``SessionEndedError``, on an
  honest client is a false logout.
- **Theft is caught every time.** For each victim (separate users, also refreshing through
  the lossy proxy) a thief copies the current refresh token (what malware on the device, or
  a leaked backup, would get), waits until the victim has rotated past it and the grace
  window has passed, and replays it straight at the server. Each replay must be refused as
  ``refresh_token_reused``, and the victim must then be signed out with reason ``reuse``.
- **With DPoP** (``ChaosConfig.dpop``: the SDK's default, every session bound to its
  client's key) the thief needs no waiting: it replays the copied token at once, inside the
  grace window, where a bearer token would still be honoured, and without the key. Each
  replay must be refused as ``invalid_dpop_proof`` (the stolen-token event), and under the
  server's ``LATCHKEY_DPOP_STOLEN_TOKEN=revoke`` the victim is signed out with reason
  ``stolen``; meanwhile every honest client's proofs, retries and replays must hold.

Network failures that survive the SDK's retries are counted (the app would show "offline");
they are not logouts and do not fail the run. So is a ``token_expired`` that reaches the app:
with a 1-2 s lifetime and whole-second ``exp`` a token can be nearly spent when it arrives
(a delayed response), and the SDK refreshes and resends only once; at a real lifetime
(minutes) that cannot happen. The client stays signed in either way.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from latchkey_client import (
    InvalidTokenError,
    LatchkeyClient,
    NetworkError,
    SessionEndedError,
)
from latchkey_client.events import AuthEvent, EventName

from tests.netproxy import LoopbackProxy

__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]


@dataclass(frozen=True)
class ChaosConfig:
    """How hard to shake: clients, threads, time, and the proxy's failure rates."""

    clients: int = 12
    threads_per_client: int = 3
    duration_seconds: float = 20.0
    victims: int = 3
    victim_threads: int = 2
    drop_rate: float = 0.10  # responses lost after the server acted
    delay_rate: float = 0.10  # responses held back (together: 20 % of responses disturbed)
    delay_seconds: tuple[float, float] = (0.05, 1.0)
    grace_seconds: float = 10.0  # the server's LATCHKEY_REFRESH_REUSE_GRACE
    think_seconds: tuple[float, float] = (0.05, 0.3)  # pause between one thread's calls
    seed: int = 8
    dpop: bool = False  # bind every session to its client's DPoP key (the SDK default)


@dataclass
class ChaosReport:
    """What happened; ``false_logouts`` must be 0 and every replay a reuse detection."""

    config: dict[str, Any]
    seconds: float = 0.0
    proxy_requests: int = 0
    proxy_dropped: int = 0
    proxy_delayed: int = 0
    refresh_requests_seen_by_proxy: int = 0
    refresh_responses_dropped: int = 0
    refresh_responses_delayed: int = 0
    api_calls: int = 0
    api_calls_ok: int = 0
    api_calls_network_failed: int = 0  # gave up after retries: "offline", not a logout
    # 401 token_expired surfaced to the app (the SDK refreshes and resends once); see below.
    api_calls_token_expired: int = 0
    api_calls_other_errors: int = 0  # anything else on an honest client: a finding
    other_error_details: list[str] = field(default_factory=list)
    refreshes: int = 0  # rotations the clients accepted
    sdk_refresh_attempts: int = 0  # refresh POSTs the SDKs sent, replays included
    false_logouts: int = 0
    false_logout_details: list[str] = field(default_factory=list)
    honest_clients_signed_in_at_end: int = 0
    honest_sessions_live_at_end: int = 0
    theft_replays: int = 0
    reuse_detections: int = 0  # replays the server refused as refresh_token_reused
    victims_signed_out_reuse: int = 0
    dpop_refusals: int = 0  # replays refused as invalid_dpop_proof (no key: stolen)
    victims_signed_out_stolen: int = 0
    honest_sessions_bound: int = 0  # honest clients whose session is DPoP-bound
    theft_details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-able data."""
        return asdict(self)


@dataclass
class _Tracked:
    """One SDK client and what it went through."""

    client: LatchkeyClient
    username: str
    session_id: str
    victim: bool
    sign_outs: list[str] = field(default_factory=list)
    refreshed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    signed_out_event: threading.Event = field(default_factory=threading.Event)


def _track(client: LatchkeyClient, username: str, victim: bool) -> _Tracked:
    assert client.session is not None
    tracked = _Tracked(client, username, client.session.session_id, victim)

    def on_signed_out(event: AuthEvent) -> None:
        tracked.sign_outs.append(str(event.reason))
        tracked.signed_out_event.set()

    def on_refreshed(_: AuthEvent) -> None:
        tracked.refreshed += 1

    client.on(EventName.SIGNED_OUT, on_signed_out)
    client.on(EventName.REFRESHED, on_refreshed)
    return tracked


def _worker(t: _Tracked, stop: threading.Event, rng: random.Random, think: tuple[float, float],
            counts: Counter[str], lock: threading.Lock) -> None:
    """Call ``/v1/me`` in a loop, as an app's screens would, until told to stop."""
    while not stop.is_set() and not t.signed_out_event.is_set():
        outcome = "ok"
        try:
            r = t.client.get("/v1/me")
            if r.status_code != 200 or r.json().get("session_id") != t.session_id:
                outcome = f"unexpected {r.status_code}"
                t.errors[outcome] += 1
        except NetworkError as exc:
            outcome = "network"
            t.errors[type(exc).__name__] += 1
        except SessionEndedError as exc:
            outcome = "ended"
            t.errors[f"{type(exc).__name__}:{exc.reason}"] += 1
        except InvalidTokenError as exc:
            outcome = "token_expired" if exc.code == "token_expired" else "other"
            t.errors[f"{type(exc).__name__}:{exc.code}"] += 1
        except Exception as exc:  # anything else is a finding, not a crash of the run
            outcome = "other"
            t.errors[f"{type(exc).__name__}: {exc}"] += 1
        with lock:
            counts["calls"] += 1
            counts[outcome] += 1
        stop.wait(rng.uniform(*think))


def _thief(victim: _Tracked, server_url: str, grace: float, stop: threading.Event,
           start_after: float, report: ChaosReport, lock: threading.Lock) -> None:
    """Copy the victim's refresh token, wait out its rotation and the grace, replay it."""
    if stop.wait(start_after):
        return
    stolen = victim.client._core.tokens.refresh_token  # what malware on the device reads
    if stolen is None:
        with lock:
            report.theft_details.append(f"{victim.username}: nothing to steal")
        return
    rotated_at = time.monotonic()
    if not victim.client.session or not victim.client.session.dpop_bound:
        deadline = time.monotonic() + 30
        while (victim.client._core.tokens.refresh_token == stolen
               and time.monotonic() < deadline):
            time.sleep(0.05)  # the victim's next refresh rotates past the stolen token
        rotated_at = time.monotonic()
        time.sleep(grace + 1.0)  # after the grace window: a replay can only be theft
    # A bound session's token is worthless without the key: replayed at once, no proof.
    with httpx.Client(base_url=server_url, timeout=10, trust_env=False) as http:
        r = http.post("/v1/auth/refresh", json={"refresh_token": stolen},
                      headers={"User-Agent": "thief/1.0"})
    code = r.json().get("code") if r.headers.get("content-type", "").endswith("json") else None
    signed_out = victim.signed_out_event.wait(15)  # the victim's next call finds out
    with lock:
        report.theft_replays += 1
        if r.status_code == 401 and code == "refresh_token_reused":
            report.reuse_detections += 1
        if r.status_code == 400 and code == "invalid_dpop_proof":
            report.dpop_refusals += 1
        if signed_out and victim.sign_outs[-1] == "reuse":
            report.victims_signed_out_reuse += 1
        if signed_out and victim.sign_outs[-1] == "stolen":
            report.victims_signed_out_stolen += 1
        report.theft_details.append(
            f"{victim.username}: replayed {time.monotonic() - rotated_at:.1f} s after "
            f"rotation -> {r.status_code} {code}; victim signed out: "
            f"{victim.sign_outs[-1] if victim.sign_outs else 'no'}")


def _login(proxy_url: str, username: str, password: str, victim: bool,
           index: int, dpop: bool) -> _Tracked:
    client = LatchkeyClient(base_url=proxy_url, idle_logout=False, max_retries=5, dpop=dpop,
                            device_id=f"chaos-device-{index:04d}",
                            device_name=f"chaos phone {index}")
    client.login(username=username, password=password)
    return _track(client, username, victim)


def run_chaos(server_url: str, proxy: LoopbackProxy, usernames: list[str], password: str,
              config: ChaosConfig) -> ChaosReport:
    """Run the workload; ``usernames`` are registered users, ``clients + victims`` of them.

    Logins happen with the proxy calm (a lost login response is a failed login, which is
    not what this measures); then the proxy starts dropping and delaying, the workers and
    thieves run for ``duration_seconds``, the proxy calms down again and every honest
    client proves its session is live with one more call.
    """
    assert len(usernames) >= config.clients + config.victims
    report = ChaosReport(config=asdict(config))
    proxy.drop_rate = proxy.delay_rate = 0.0
    tracked = [_login(proxy.base_url, name, password, i >= config.clients, i, config.dpop)
               for i, name in enumerate(usernames[: config.clients + config.victims])]
    stop = threading.Event()
    lock = threading.Lock()
    counts: Counter[str] = Counter()
    master = random.Random(config.seed)
    threads: list[threading.Thread] = []
    for t in tracked:
        n = config.victim_threads if t.victim else config.threads_per_client
        for _ in range(n):
            rng = random.Random(master.random())
            threads.append(threading.Thread(
                target=_worker, args=(t, stop, rng, config.think_seconds, counts, lock),
                daemon=True))
    victims = [t for t in tracked if t.victim]
    room = max(0.0, config.duration_seconds - config.grace_seconds - 6.0)
    for i, victim in enumerate(victims):
        start_after = 1.0 + room * i / max(1, len(victims))
        threads.append(threading.Thread(
            target=_thief, args=(victim, server_url, config.grace_seconds, stop, start_after,
                                 report, lock), daemon=True))
    before = Counter(proxy.stats)
    proxy.delay_seconds = config.delay_seconds
    proxy.drop_rate, proxy.delay_rate = config.drop_rate, config.delay_rate
    started = time.monotonic()
    for th in threads:
        th.start()
    time.sleep(config.duration_seconds)
    stop.set()
    for th in threads:
        th.join(timeout=60)
    report.seconds = round(time.monotonic() - started, 1)
    proxy.drop_rate = proxy.delay_rate = 0.0
    stats = proxy.stats - before
    report.proxy_requests = stats["requests"]
    report.proxy_dropped = stats["dropped"]
    report.proxy_delayed = stats["delayed"]
    report.refresh_requests_seen_by_proxy = stats["requests /v1/auth/refresh"]
    report.refresh_responses_dropped = stats["dropped /v1/auth/refresh"]
    report.refresh_responses_delayed = stats["delayed /v1/auth/refresh"]
    report.api_calls = counts["calls"]
    report.api_calls_ok = counts["ok"]
    report.api_calls_network_failed = counts["network"]
    report.api_calls_token_expired = counts["token_expired"]
    for t in tracked:
        report.refreshes += t.refreshed
        report.sdk_refresh_attempts += t.client.auth.refresh_requests
        if t.victim:
            continue
        others = {e: n for e, n in t.errors.items()
                  if not e.startswith(("Network", "InvalidTokenError:token_expired", "Session"))}
        report.api_calls_other_errors += sum(others.values())
        report.other_error_details += [f"{t.username}: {e} x{n}" for e, n in others.items()]
        problems = [*t.sign_outs, *(e for e in t.errors if e.startswith("Session"))]
        if t.client.is_signed_in:
            report.honest_clients_signed_in_at_end += 1
            if t.client.session is not None and t.client.session.dpop_bound:
                report.honest_sessions_bound += 1
            try:
                r = t.client.get("/v1/me")
                if r.status_code == 200 and r.json()["session_id"] == t.session_id:
                    report.honest_sessions_live_at_end += 1
                else:
                    problems.append(f"final /v1/me {r.status_code}")
            except Exception as exc:
                problems.append(f"final /v1/me {type(exc).__name__}")
        else:
            problems.append("not signed in at the end")
        if problems:
            report.false_logouts += 1
            report.false_logout_details.append(f"{t.username}: {problems}")
    for t in tracked:
        t.client.close()
    return report
