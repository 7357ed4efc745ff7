"""Start real processes for benchmarks and drive them with wrk; report medians.

Benchmarks compare two things *in the same run*, interleaving repetitions, so that a noisy
shared machine shifts both sides alike and the ratio stays meaningful.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latchkey_server.store import recommended_redis_args

from tests.conftest import (  # the repo root is on sys.path (above)
    FAST_ARGON2,
    PASSWORD,
    RedisProcess,
    ServerProcess,
    start_redis,
    start_server,
    unique_username,
)

__all__ = ["BENCH_USER_AGENT", "FAST_ARGON2", "PASSWORD", "ServerProcess", "interleave",
           "login_tokens", "start_bench_redis", "start_redis", "start_server", "wrk_rps"]

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
# Like a real app, the benchmark client signs in and calls with one User-Agent; a change
# would be a device-binding event (D3) on every request, which is not what we measure.
BENCH_USER_AGENT = "LatchkeyBench/1.0"


def start_bench_redis(data_dir: Path, socket_path: Path) -> RedisProcess:
    """Start a redis-server on a unix socket, configured as the embedded store is."""
    return start_redis(data_dir, None, "--unixsocket", str(socket_path),
                       *recommended_redis_args())


def wrk_rps(url: str, *, seconds: int = 5, connections: int = 16, threads: int = 2,
            headers: dict[str, str] | None = None, lua: str | None = None) -> float:
    """Return wrk's requests per second against ``url``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for this benchmark: apt-get install wrk")
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    for name, value in {"User-Agent": BENCH_USER_AGENT, **(headers or {})}.items():
        cmd += ["-H", f"{name}: {value}"]
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        cmd += ["-s", script.name]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script.name)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed responses in benchmark:\n{out}")
    match = _RPS.search(out)
    if not match:
        raise RuntimeError(out)
    return float(match.group(1))


def interleave(runs: dict[str, Callable[[], float]], repetitions: int) -> dict[str, float]:
    """Run each measurement ``repetitions`` times in turn; return each one's median."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repetitions):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def login_tokens(base_url: str) -> dict[str, str]:
    """Register a user and return its token response."""
    import httpx

    username = unique_username("bench")
    with httpx.Client(base_url=base_url, timeout=30,
                      headers={"User-Agent": BENCH_USER_AGENT}) as http:
        http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
        r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
        r.raise_for_status()
        return r.json()


def print_json(result: dict[str, object]) -> None:
    """Print a result as one JSON document (what docs/PERFORMANCE.md quotes)."""
    print(json.dumps(result, indent=2))
