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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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

__all__ = ["BENCH_USER_AGENT", "FAST_ARGON2", "PASSWORD", "ServerProcess", "WrkResult",
           "interleave", "interleave_samples", "login_tokens", "start_bench_redis",
           "start_latchkey", "start_redis", "start_server", "wrk_rps", "wrk_run"]

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
# wrk --latency prints e.g. "     99%   12.34ms"; the unit is us, ms or s.
_PERCENTILE = r"^\s+{}%\s+([\d.]+)(us|ms|s)\s*$"
_MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
T = TypeVar("T")
# Like a real app, the benchmark client signs in and calls with one User-Agent; a change
# would be a device-binding event (D3) on every request, which is not what we measure.
BENCH_USER_AGENT = "LatchkeyBench/1.0"


def start_bench_redis(data_dir: Path, socket_path: Path) -> RedisProcess:
    """Start a redis-server on a unix socket, configured as the embedded store is."""
    return start_redis(data_dir, None, "--unixsocket", str(socket_path),
                       *recommended_redis_args())


def start_latchkey(instance_path: Path, redis_url: str | None, *args: str,
                   log_level: str | None = None) -> ServerProcess:
    """Start ``latchkey-server --host --port`` as its defaults have it; wait for ``/readyz``.

    The tests' ``start_server`` sets a debug log level and one worker; here the worker
    count and log level are the server's own defaults, read from its settings (the parser has none)
    so that a change of default changes the benchmark too. Only the instance path, the
    Redis URL (none: the embedded store), cheap argon2 (login is not measured) and the
    per-IP failure budgets (every wrk client is 127.0.0.1) are the tests' values.
    """
    from latchkey_server.config import Settings

    # The parser has no defaults of its own any more (cli.py): unset flags fall back to
    # the settings, so the settings' default is the server's.
    defaults = {"LATCHKEY_WORKERS": str(Settings.workers),
                "LATCHKEY_LOG_LEVEL": log_level or Settings.log_level}
    return start_server(instance_path, defaults, redis_url=redis_url, args=args)


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured: throughput and latency percentiles."""

    rps: float
    p50_ms: float
    p99_ms: float


def wrk_run(url: str, *, seconds: int = 5, connections: int = 16, threads: int = 2,
            headers: dict[str, str] | None = None, lua: str | None = None) -> WrkResult:
    """Run wrk with ``--latency`` against ``url``; return its rate and p50/p99."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for this benchmark: apt-get install -y wrk")
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections),
           "-d", f"{seconds}s"]
    for name, value in {"User-Agent": BENCH_USER_AGENT, **(headers or {})}.items():
        cmd += ["-H", f"{name}: {value}"]
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        cmd += ["-s", script.name]
    try:
        done = subprocess.run([*cmd, url], capture_output=True, text=True)
    finally:
        if script:
            os.unlink(script.name)
    if done.returncode != 0:
        # Not CalledProcessError: its message would carry the command line, bearer token
        # included.
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    out = done.stdout
    # A failed response is not a fast one: refuse the sample rather than average it in.
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed responses in benchmark:\n{out}")
    match = _RPS.search(out)
    if not match:
        raise RuntimeError(out)
    return WrkResult(float(match.group(1)), _percentile_ms(out, 50), _percentile_ms(out, 99))


def _percentile_ms(out: str, percent: int) -> float:
    match = re.search(_PERCENTILE.format(percent), out, re.MULTILINE)
    if not match:  # wrk prints the distribution only with --latency and some requests
        return float("nan")
    return float(match.group(1)) * _MS_PER_UNIT[match.group(2)]


def wrk_rps(url: str, *, seconds: int = 5, connections: int = 16, threads: int = 2,
            headers: dict[str, str] | None = None, lua: str | None = None) -> float:
    """Return wrk's requests per second against ``url``."""
    return wrk_run(url, seconds=seconds, connections=connections, threads=threads,
                   headers=headers, lua=lua).rps


def interleave_samples(runs: dict[str, Callable[[], T]], repetitions: int) -> dict[str, list[T]]:
    """Run each measurement ``repetitions`` times in turn; return every sample of each."""
    samples: dict[str, list[T]] = {name: [] for name in runs}
    for _ in range(repetitions):
        for name, run in runs.items():
            samples[name].append(run())
    return samples


def interleave(runs: dict[str, Callable[[], float]], repetitions: int) -> dict[str, float]:
    """Run each measurement ``repetitions`` times in turn; return each one's median."""
    return {name: statistics.median(values)
            for name, values in interleave_samples(runs, repetitions).items()}


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
