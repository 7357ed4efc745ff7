"""Measure what one request of each kind costs in CPU, to size a fleet (docs/SCALING.md).

A rate on a shared 2-core machine says little about a fleet; CPU time per request does:
a core does ``1 / cpu_seconds_per_request`` of them per second, whatever else shares the
machine. For each kind of request, under load from wrk, this reads the CPU time the
``latchkey-server`` processes (the gunicorn master and its workers, from ``/proc``) and the
Redis server (``INFO cpu``) spent, and divides by the requests wrk completed:

- ``login``: ``POST /v1/auth/login`` at the **configured argon2 cost** (the server's own
  defaults, not the tests' cheap one): one argon2id verify, a session created;
- ``refresh``: ``POST /v1/auth/refresh``, each wrk connection following its own rotation
  chain (``bench.hot_path.REFRESH_LUA``);
- ``me``: ``GET /v1/me``, the protected request;
- ``healthz``: ``GET /healthz``, the floor every request pays (HTTP, gunicorn, Flask).

``latchkey-server --host --port`` with its defaults (gthread 2 x 8, INFO with the access
log), the stock redis-server 7 on TCP loopback with its defaults. Kinds are interleaved and
each is repeated; the medians are reported. Introspection is measured by
``bench.introspection``.

Run: ``.venv/bin/python -m bench.per_core [--seconds 5] [--repetitions 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    WrkResult,
    interleave_samples,
    login_tokens,
    print_json,
    start_latchkey,
    wrk_run,
)
from bench.hot_path import REFRESH_LUA
from bench.redis_stats import redis_version, start_stock_redis
from tests.conftest import PASSWORD, unique_username

_TICKS = os.sysconf("SC_CLK_TCK")

LOGIN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username": "%s", "password": "%s"}'
"""


def _process_tree(root: int) -> list[int]:
    """Return ``root`` and every descendant's pid (gunicorn's master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        found.append(pid)
        frontier.extend(children.get(pid, []))
    return found


def _cpu_seconds(pids: list[int]) -> float:
    """Return the user + system CPU seconds the live processes ``pids`` have used."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def _redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measured(run: Callable[[], WrkResult], server_pid: int,
             client: redis.Redis) -> Callable[[], dict[str, float]]:
    """Wrap a wrk run: also return the server's and Redis's CPU time per request."""
    def sample() -> dict[str, float]:
        pids = _process_tree(server_pid)
        server_before, redis_before = _cpu_seconds(pids), _redis_cpu_seconds(client)
        result = run()
        server = _cpu_seconds(pids) - server_before
        redis_cpu = _redis_cpu_seconds(client) - redis_before
        requests = result.rps * run.seconds  # type: ignore[attr-defined]
        return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "server_cpu_ms_per_request": 1000 * server / requests,
                "redis_cpu_us_per_request": 1e6 * redis_cpu / requests}
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    from latchkey_server.config import Settings

    configured_argon2 = {  # the server's defaults: what a deployment pays per sign-in
        "LATCHKEY_ARGON2_TIME_COST": str(Settings.argon2_time_cost),
        "LATCHKEY_ARGON2_MEMORY_KIB": str(Settings.argon2_memory_kib),
        "LATCHKEY_ARGON2_PARALLELISM": str(Settings.argon2_parallelism)}
    with tempfile.TemporaryDirectory(prefix="lkc-") as tmp:
        store = start_stock_redis(Path(tmp) / "redis")
        server = start_latchkey(Path(tmp) / "lk", store.url, env=configured_argon2)
        client = store.client()
        try:
            base = server.base_url
            username = unique_username("percore")
            import httpx

            httpx.post(base + "/v1/auth/register", timeout=30,
                       json={"username": username, "password": PASSWORD}).raise_for_status()
            me_token = login_tokens(base)["access_token"]
            refresh_connections = 8
            chains = [login_tokens(base)["refresh_token"] for _ in range(
                refresh_connections * (args.repetitions + 1))]

            def wrk(path: str, connections: int, **kw: Any) -> Callable[[], WrkResult]:
                def run() -> WrkResult:
                    lua = kw.get("lua")
                    if callable(lua):
                        lua = lua()
                    return wrk_run(base + path, seconds=args.seconds, connections=connections,
                                   threads=kw.get("threads", 1), headers=kw.get("headers"),
                                   lua=lua)
                run.seconds = args.seconds  # type: ignore[attr-defined]
                return run

            def fresh_chains() -> str:
                # Each repetition follows chains no earlier one has rotated.
                mine = [chains.pop() for _ in range(refresh_connections)]
                return REFRESH_LUA % ", ".join(f'"{t}"' for t in mine)

            runs = {
                "login": wrk("/v1/auth/login", 4, lua=LOGIN_LUA % (username, PASSWORD)),
                "refresh": wrk("/v1/auth/refresh", refresh_connections,
                               threads=refresh_connections, lua=fresh_chains),
                "me": wrk("/v1/me", args.connections,
                          headers={"Authorization": f"Bearer {me_token}"}),
                "healthz": wrk("/healthz", args.connections),
            }
            samples = interleave_samples(
                {name: measured(run, server.proc.pid, client) for name, run in runs.items()},
                args.repetitions)
            version = redis_version(client)
        finally:
            server.stop()
            store.stop()
    result: dict[str, Any] = {}
    for name, runs_of_kind in samples.items():
        median = {key: round(statistics.median(s[key] for s in runs_of_kind), 3)
                  for key in runs_of_kind[0]}
        median["per_server_core_per_second"] = round(
            1000 / median["server_cpu_ms_per_request"], 1)
        median["samples_server_cpu_ms"] = [round(s["server_cpu_ms_per_request"], 3)
                                           for s in runs_of_kind]
        result[name] = median
    result["me_cpu_over_healthz_cpu"] = round(
        result["me"]["server_cpu_ms_per_request"] / result["healthz"]["server_cpu_ms_per_request"],
        3)
    result["refresh_per_core_over_me_per_core"] = round(
        result["refresh"]["per_server_core_per_second"]
        / result["me"]["per_server_core_per_second"], 3)
    print_json({**result, "argon2": configured_argon2, "redis_version": version,
                "seconds": args.seconds, "repetitions": args.repetitions,
                "uptime": subprocess.run(["uptime"], capture_output=True,
                                         text=True).stdout.strip()})


if __name__ == "__main__":
    main()
