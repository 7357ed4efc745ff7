"""Measure the protected request against an unauthenticated one on the same server.

``/v1/me`` (signature check, one Lua script that verifies idle/absolute/revocation and
touches the session) versus ``/healthz`` (no auth, no store), both under gunicorn with the
same workers, interleaved, medians of N repetitions. Also counts Redis commands per
protected request and per refresh with ``INFO commandstats``.

Run: ``.venv/bin/python -m bench.hot_path [--seconds 5] [--repetitions 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bench.harness import (
    BENCH_USER_AGENT,
    interleave,
    login_tokens,
    print_json,
    start_bench_redis,
    start_server,
    wrk_rps,
)
from tests.server.ops_support import client_commands_during


def _command_count(client: redis.Redis, action: Callable[[], object]) -> int:
    """Count the commands clients sent while ``action`` ran (MONITOR, script internals out).

    ``INFO commandstats`` also counts what a Lua script runs inside Redis, so it cannot tell
    one EVALSHA from several round trips.
    """
    return len(client_commands_during(client, action))


def count_commands(base_url: str, client: redis.Redis, tokens: dict[str, str]) -> dict[str, int]:
    """Count client-sent Redis commands for one protected request and one refresh."""
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    with httpx.Client(base_url=base_url, headers={"User-Agent": BENCH_USER_AGENT}) as http:
        # Warm up: every worker's connection pool and both scripts in Redis's cache, so
        # the count is the steady state, not a first connection's HELLO or a SCRIPT LOAD.
        warm = login_tokens(base_url)
        for _ in range(4):
            warm = http.post("/v1/auth/refresh", json={
                "refresh_token": warm["refresh_token"]}).json()
        for _ in range(20):
            http.get("/v1/me", headers=headers)
        # The median over several requests is the steady state; a connection's one-off
        # handshake (HELLO) on a worker thread's first use does not recur.
        me_calls = statistics.median(_command_count(
            client, lambda: http.get("/v1/me", headers=headers).raise_for_status())
            for _ in range(7))
        chain = [tokens["refresh_token"]]

        def refresh_once() -> None:
            r = http.post("/v1/auth/refresh", json={"refresh_token": chain[-1]})
            r.raise_for_status()
            chain.append(r.json()["refresh_token"])

        refresh_calls = statistics.median(
            _command_count(client, refresh_once) for _ in range(7))
    return {"redis_commands_per_protected_request": int(me_calls),
            "redis_commands_per_refresh": int(refresh_calls)}


# One connection per wrk thread, each following its own session's rotation chain: every
# refresh presents the token the previous response returned (no grace-window replays).
REFRESH_LUA = """
local counter = 0
local tokens = {%s}
function setup(thread)
  counter = counter + 1
  thread:set("rt", tokens[counter])
end
function request()
  return wrk.format("POST", "/v1/auth/refresh", {["Content-Type"] = "application/json"},
    '{"refresh_token": "' .. rt .. '"}')
end
function response(status, headers, body)
  local next_token = string.match(body, '"refresh_token":%%s*"([^"]+)"')
  if next_token then rt = next_token end
end
"""


def refresh_vs_me(base_url: str, seconds: int, sessions: int) -> dict[str, float]:
    """Return refresh and /v1/me rates at the same concurrency (one session per thread)."""
    me_tokens = login_tokens(base_url)
    chains = [login_tokens(base_url)["refresh_token"] for _ in range(sessions)]
    lua = REFRESH_LUA % ", ".join(f'"{t}"' for t in chains)
    refresh = wrk_rps(base_url + "/v1/auth/refresh", seconds=seconds, connections=sessions,
                      threads=sessions, lua=lua)
    me = wrk_rps(base_url + "/v1/me", seconds=seconds, connections=sessions,
                 threads=sessions,
                 headers={"Authorization": f"Bearer {me_tokens['access_token']}"})
    return {"refresh_rps": refresh, "me_rps_same_concurrency": me}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--transport", choices=("unix", "tcp"), default="unix",
                        help="how the server reaches Redis (the embedded default is unix)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_bench_redis(Path(tmp) / "redis", sock)
        url = f"unix://{sock}" if args.transport == "unix" else redis_proc.url
        server = start_server(Path(tmp) / "instance", {
            "LATCHKEY_WORKERS": str(args.workers), "LATCHKEY_LOG_LEVEL": "WARNING"},
            redis_url=url)
        try:
            tokens = login_tokens(server.base_url)
            commands = count_commands(server.base_url, redis_proc.client(), tokens)
            tokens = login_tokens(server.base_url)
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}
            rotation = interleave({
                "refresh_rps": lambda: refresh_vs_me(server.base_url, args.seconds,
                                                     4)["refresh_rps"],
                "me_rps_same_concurrency": lambda: refresh_vs_me(
                    server.base_url, args.seconds, 4)["me_rps_same_concurrency"],
            }, args.repetitions)
            medians = interleave({
                "healthz_rps": lambda: wrk_rps(server.base_url + "/healthz",
                                               seconds=args.seconds),
                "me_rps": lambda: wrk_rps(server.base_url + "/v1/me", seconds=args.seconds,
                                          headers=auth),
            }, args.repetitions)
        finally:
            server.stop()
            redis_proc.stop()
    print_json({
        **{k: round(v, 1) for k, v in medians.items()},
        "me_over_healthz": round(medians["me_rps"] / medians["healthz_rps"], 3),
        **{k: round(v, 1) for k, v in rotation.items()},
        "refresh_over_me": round(
            rotation["refresh_rps"] / rotation["me_rps_same_concurrency"], 3),
        **commands,
        "transport": args.transport, "workers": args.workers, "seconds": args.seconds,
        "repetitions": args.repetitions,
    })


if __name__ == "__main__":
    main()
