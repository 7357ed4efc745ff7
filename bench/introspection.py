"""Measure ``POST /oauth/introspect`` against a live session set of 100 000 (issue 15).

Introspection is the any-language way for a backend to ask whether a token's session is
live now (RFC 7662; docs/RESOURCE_SERVERS.md): every call is an HTTP request to Latchkey,
a signature check and one ``verify_touch`` script in Redis. This benchmark measures what
one Latchkey core answers, so that docs/SCALING.md can size a deployment by it:

1. a Redis (stock redis-server 7 on TCP loopback with its compiled-in defaults, as a
   production host runs it; ``--redis unix_tuned`` for the embedded store's socket and
   hash settings) and ``latchkey-server --host --port`` with its own defaults
   (``harness.start_latchkey``: default worker count, threads and log level, access log on);
2. a resource client created as an operator would, ``latchkey-server clients create
   --type resource`` (its secret sent with HTTP Basic, section 2.1);
3. ``--sessions`` live sessions (100 000) created directly through the store's own
   ``create_session`` script from several threads, not through argon2 logins (login is
   not measured); access tokens minted with the server's own keys for ``--tokens`` of them
   spread over the whole set, fresh before each run so none expires during it;
4. wrk (``harness.wrk_run``) POSTing the form ``token=…&token_type_hint=access_token``,
   each request the next token of the list; its Lua counts every answer that is not
   ``"active": true`` and the run is refused if there is one (an inactive answer is
   cheaper and is not what we measure). ``/healthz`` on the same server is measured in the
   same rounds, interleaved, as the ceiling of the HTTP stack alone; and introspection
   once more over one connection (``wrk -c1``), for the latency of a call that does not
   queue behind others.

"Per core" is measured, not divided by ``nproc``: the CPU time the server's processes (the
gunicorn master and its workers) and Redis used during each wrk run is read from
``/proc/<pid>/stat``, and requests ÷ server CPU-seconds is the rate one fully busy core of
Latchkey sustains. On a shared machine that figure moves much less than the wall-clock rate.

Run: ``.venv/bin/python -m bench.introspection [--sessions 100000] [--seconds 10]
[--repetitions 3]`` (needs ``wrk``: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from latchkey_server.config import load_settings
from latchkey_server.keys import HmacKeys, KeyRing
from latchkey_server.redis_connection import connect
from latchkey_server.store import SessionStore
from latchkey_server.tokens import TokenService, new_session_id, new_user_id

from bench.harness import (
    BENCH_USER_AGENT,
    ServerProcess,
    WrkResult,
    interleave_samples,
    print_json,
    start_bench_redis,
    start_latchkey,
    wrk_run,
)
from bench.redis_stats import redis_version, start_stock_redis
from tests.conftest import RedisProcess
from tests.server.oauth_support import create_client
from tests.server.ops_support import client_commands_during

INTROSPECT_PATH = "/oauth/introspect"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Each wrk thread walks the token list from its own offset; every answer that is not an
# active one is counted and written to a file in done() (wrk prints only its own figures).
INTROSPECT_LUA = """
local tokens = {%(tokens)s}
local authorization = "%(authorization)s"
local report_path = "%(report)s"
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  position = (id * 7919) %% #tokens
  inactive = 0
end

function request()
  position = position %% #tokens + 1
  return wrk.format("POST", "%(path)s", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = authorization},
    "token=" .. tokens[position] .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if not string.find(body, '"active":%%s*true') then inactive = inactive + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("inactive") end
  local out = io.open(report_path, "w")
  out:write(tostring(total))
  out:close()
end
"""


def load_sessions(store: SessionStore, count: int, threads: int = 8) -> list[tuple[str, str]]:
    """Create ``count`` live sessions of distinct users through the store's own script.

    Returns their (user_id, session_id) pairs. The same arguments a login passes, with a
    placeholder refresh hash: introspecting an access token never reads it.
    """
    now = int(time.time())

    def create(i: int) -> tuple[str, str]:
        user_id, session_id = new_user_id(), new_session_id()
        store.create_session(
            user_id=user_id, session_id=session_id, refresh_hash="x" * 22,
            auth_level="normal", auth_time=now, device_id=f"d{i}", device_name="Pixel 8",
            user_agent="LatchkeyDemo/1.0 (Android 14; Pixel 8) okhttp/4.12",
            ip="203.0.113.7")
        return user_id, session_id

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(create, range(count), chunksize=500))


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its descendants (the server's gunicorn master and workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """Return the user + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLOCK_TICKS


@contextmanager
def cpu_used(pids: Callable[[], list[int]]) -> Iterator[dict[str, float]]:
    """Measure the CPU seconds ``pids()`` use inside the block (read again at its end)."""
    out: dict[str, float] = {}
    before = {pid: cpu_seconds([pid]) for pid in pids()}
    yield out
    # A process that appears during the block (a respawned worker) counts from zero.
    out["cpu_s"] = sum(cpu_seconds([pid]) - before.get(pid, 0.0) for pid in pids())


class Introspection:
    """The running setup: server, Redis, the resource client and the sampled sessions."""

    def __init__(self, server: ServerProcess, redis_proc: RedisProcess, redis_url: str,
                 sample: list[tuple[str, str]], args: argparse.Namespace) -> None:
        self.server, self.redis_proc, self.args, self.sample = server, redis_proc, args, sample
        port = int(server.base_url.rsplit(":", 1)[1])
        settings = load_settings(server.env, {"host": "127.0.0.1", "port": port,
                                              "redis_url": redis_url})
        self.tokens = TokenService(settings, KeyRing(settings), HmacKeys(settings))
        client = create_client(server, "resource", "bench-introspection")
        raw = f"{client['client_id']}:{client['client_secret']}".encode()
        self.authorization = "Basic " + base64.b64encode(raw).decode()

    def mint(self) -> list[str]:
        """Return fresh access tokens for the sampled sessions, signed by the server's key."""
        now = int(time.time())
        return [self.tokens.issue_access_token(user_id, session_id, "normal", now)
                for user_id, session_id in self.sample]

    def check_active(self, token: str) -> None:
        """Refuse to measure unless the endpoint says the token is active."""
        r = httpx.post(self.server.base_url + INTROSPECT_PATH, timeout=10,
                       data={"token": token, "token_type_hint": "access_token"},
                       headers={"Authorization": self.authorization,
                                "User-Agent": BENCH_USER_AGENT})
        r.raise_for_status()
        if r.json().get("active") is not True:
            raise RuntimeError(f"a minted token is not active: {r.json()}")

    def commands_per_introspection(self) -> list[str]:
        """Return the Redis commands one introspection sends (MONITOR; steady state)."""
        token = self.mint()[0]
        with httpx.Client(base_url=self.server.base_url, timeout=10, headers={
                "Authorization": self.authorization, "User-Agent": BENCH_USER_AGENT}) as http:
            def once() -> None:
                http.post(INTROSPECT_PATH, data={
                    "token": token, "token_type_hint": "access_token"}).raise_for_status()

            for _ in range(20):  # every worker thread's connection made, scripts loaded
                once()
            admin = self.redis_proc.client()
            admin.ping()  # its own connection made (HELLO) before MONITOR starts counting
            counted = [client_commands_during(admin, once) for _ in range(7)]
        return sorted(counted, key=len)[len(counted) // 2]

    def measured(self, run: Callable[[], WrkResult]) -> dict[str, Any]:
        """Run ``run`` while counting the server's and Redis's CPU seconds."""
        server_pids = lambda: process_tree(self.server.proc.pid)  # noqa: E731
        with cpu_used(server_pids) as server_cpu, \
                cpu_used(lambda: [self.redis_proc.proc.pid]) as redis_cpu:
            started = time.monotonic()
            result = run()
            wall = time.monotonic() - started
        requests = result.rps * self.args.seconds
        return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "server_cpu_s": server_cpu["cpu_s"], "redis_cpu_s": redis_cpu["cpu_s"],
                "requests": requests, "wall_s": wall}

    def introspect_run(self, connections: int | None = None) -> dict[str, Any]:
        tokens = self.mint()
        self.check_active(tokens[0])
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "inactive"
            lua = INTROSPECT_LUA % {"tokens": ", ".join(f'"{t}"' for t in tokens),
                                    "authorization": self.authorization,
                                    "report": report, "path": INTROSPECT_PATH}
            out = self.measured(lambda: wrk_run(
                self.server.base_url + INTROSPECT_PATH, seconds=self.args.seconds,
                connections=connections or self.args.connections,
                threads=self.args.wrk_threads, lua=lua))
            inactive = int(report.read_text() or "0")
        if inactive:
            raise RuntimeError(f"{inactive} introspections answered inactive: not measured")
        return out

    def healthz_run(self) -> dict[str, Any]:
        return self.measured(lambda: wrk_run(
            self.server.base_url + "/healthz", seconds=self.args.seconds,
            connections=self.args.connections, threads=self.args.wrk_threads))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the medians of the runs, and the rates per CPU-second they imply."""
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    per_server_core = [r["requests"] / r["server_cpu_s"] for r in runs if r["server_cpu_s"]]
    per_core_with_redis = [r["requests"] / (r["server_cpu_s"] + r["redis_cpu_s"])
                           for r in runs if r["server_cpu_s"]]
    return {
        "rps": round(median("rps"), 1),
        "p50_ms": round(median("p50_ms"), 2),
        "p99_ms": round(median("p99_ms"), 2),
        "requests_per_server_cpu_second": round(statistics.median(per_server_core), 1),
        "requests_per_cpu_second_server_and_redis": round(
            statistics.median(per_core_with_redis), 1),
        "server_cpu_ms_per_request": round(
            1000 * median("server_cpu_s") / median("requests"), 3),
        "redis_cpu_us_per_request": round(
            1e6 * median("redis_cpu_s") / median("requests"), 1),
        "server_cores_busy": round(median("server_cpu_s") / median("wall_s"), 2),
        "rps_samples": [round(r["rps"], 1) for r in runs],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="live sessions")
    parser.add_argument("--tokens", type=int, default=1000,
                        help="sessions (spread over the set) whose tokens wrk sends")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--redis", choices=("tcp_default", "unix_tuned"),
                        default="tcp_default")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 000 sessions, 2 s per wrk run, 1 repetition")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.seconds, args.repetitions = 2000, 2, 1
    args.tokens = min(args.tokens, args.sessions)
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="lki-") as tmp:
        root = Path(tmp)
        if args.redis == "tcp_default":
            redis_proc = start_stock_redis(root / "redis")
            url = redis_proc.url
        else:
            sock = root / "redis.sock"
            redis_proc = start_bench_redis(root / "redis", sock)
            url = f"unix://{sock}"
        server = None
        try:
            server = start_latchkey(root / "instance", url)
            settings = load_settings(server.env, {"redis_url": url})
            store = SessionStore(connect(settings, url), settings)
            started = time.monotonic()
            sessions = load_sessions(store, args.sessions)
            load_seconds = time.monotonic() - started
            step = max(1, len(sessions) // args.tokens)
            bench = Introspection(server, redis_proc, url, sessions[::step][:args.tokens],
                                  args)
            commands = bench.commands_per_introspection()
            samples = interleave_samples({
                "introspect": bench.introspect_run,
                "introspect_one_connection": lambda: bench.introspect_run(1),
                "healthz": bench.healthz_run}, args.repetitions)
            memory_mb = store.client.info("memory")["used_memory"] / 2**20
            keys = store.client.dbsize()
            version = redis_version(store.client)
            uptime = os.getloadavg()
        finally:
            if server is not None:
                server.stop()
            redis_proc.stop()
    introspect, healthz = summarise(samples["introspect"]), summarise(samples["healthz"])
    print_json({
        "introspect": introspect,
        # One request at a time (wrk -c1): the latency of a call that does not queue.
        "introspect_one_connection": summarise(samples["introspect_one_connection"]),
        "healthz_same_server": healthz,
        "introspect_over_healthz": round(introspect["rps"] / healthz["rps"], 3),
        "redis_commands_per_introspection": commands,
        "live_sessions": args.sessions,
        "session_load_seconds": round(load_seconds, 1),
        "redis": {"setup": args.redis, "version": version, "keys": keys,
                  "used_memory_mb": round(memory_mb, 1)},
        "distinct_tokens_sent": args.tokens,
        "load_average_at_end": [round(v, 2) for v in uptime],
        "nproc": os.cpu_count(),
        "wrk": f"wrk --latency -t{args.wrk_threads} -c{args.connections} -d{args.seconds}s",
        "settings": vars(args),
    })


if __name__ == "__main__":
    main()
