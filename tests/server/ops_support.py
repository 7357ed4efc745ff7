"""Shared helpers for the detection, observability and serving tests (issue 4).

These tests change limits and kill Redis, so most of them run against a redis-server of
their own (``start_redis`` from the fixtures) instead of the session-wide one: counters
and outages stay out of everyone else's tests.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import PASSWORD, ServerProcess, unique_username

__all__ = [
    "client_commands_during",
    "metric_value",
    "processes_mentioning",
    "sign_in",
    "wait_for",
    "wipe_rate_limits",
]


def sign_in(server: ServerProcess, http: httpx.Client | None = None,
            **login_extra: Any) -> tuple[str, dict[str, Any]]:
    """Register a fresh user on ``server`` and log in; return (username, token response)."""
    own = http is None
    http = http or server.client()
    try:
        username = unique_username()
        r = http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD,
                                              **login_extra})
        assert r.status_code == 200, r.text
        return username, r.json()
    finally:
        if own:
            http.close()


def wipe_rate_limits(client: redis.Redis) -> None:
    """Delete every rate-limit counter, so a test starts with full budgets."""
    from latchkey_server.store import RATE_LIMIT_KEY_PREFIX

    for key in client.scan_iter(f"{RATE_LIMIT_KEY_PREFIX}:*"):
        client.delete(key)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Return one sample's value from Prometheus text (0 if the series is absent)."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "")
    match = re.search(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def client_commands_during(client: redis.Redis, action: Callable[[], object]) -> list[str]:
    """Return the commands Redis clients sent while ``action`` ran (script internals left out).

    MONITOR marks commands a Lua script runs with ``lua``; those are part of one EVALSHA
    round trip, so only what clients sent is counted.
    """
    seen: list[str] = []
    with client.monitor() as monitor:
        client.set("lk-test:start", "1")
        action()
        client.set("lk-test:stop", "1")
        for event in monitor.listen():
            command = event["command"]
            if "lk-test:stop" in command:
                break
            if "lk-test:start" in command or event.get("client_type") == "lua":
                continue
            seen.append(command.split()[0].upper())
    return seen


def processes_mentioning(text: str) -> list[int]:
    """Return the pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next((line for line in (entry / "status").read_text().splitlines()
                          if line.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "zombie" not in state and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], bool], timeout_seconds: float = 15.0,
             interval_seconds: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or the time is up; return its last value."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_seconds)
    return predicate()
