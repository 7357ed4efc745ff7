"""Read what Redis itself spends per call: ``INFO commandstats`` and ``SLOWLOG`` by script.

``INFO commandstats`` counts every ``EVALSHA`` alike, whichever script it ran, and also
counts the commands a script runs inside (``HMGET``, ``TIME``, ``HSET``). ``SLOWLOG`` with
a threshold of 0 records every top-level command with its duration and arguments, so it
can tell scripts apart by SHA1; only durations and script names leave this module, never
the arguments (they hold session ids).
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from tests.conftest import RedisProcess, free_port

__all__ = ["STOCK_REDIS", "latchkey_script_names", "redis_cpu", "redis_version",
           "start_stock_redis"]

# The distribution's redis-server 7, not a bundled one: what a production host runs.
STOCK_REDIS = "/usr/bin/redis-server"
_SLOWLOG_ENTRIES = 100_000


def start_stock_redis(data_dir: Path, binary: str = STOCK_REDIS) -> RedisProcess:
    """Start ``binary`` (the stock redis-server) on TCP loopback with compiled-in defaults.

    Only port, bind address and directory are set: no hash-encoding tuning, no unix
    socket, snapshots as shipped. This is the setup the independent benchmark used.
    """
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(500):
        with contextlib.suppress(redis.exceptions.ConnectionError):
            if client.ping():
                return RedisProcess(port, proc, data_dir)
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def latchkey_script_names() -> dict[str, str]:
    """Return SHA1 → script name for the scripts the installed server sends."""
    from latchkey_resource.scripts import with_prelude

    names = {}
    own = (resources.files("latchkey_server") / "lua").iterdir()
    for entry in [*own, resources.files("latchkey_resource") / "lua" / "verify_touch.lua"]:
        if entry.name.endswith(".lua") and not entry.name.startswith("_"):
            source = with_prelude(entry.read_text())
            names[hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()] = (
                entry.name.removesuffix(".lua"))
    return names


def redis_version(client: redis.Redis) -> str:
    """Return the server's version string."""
    return str(client.info("server")["redis_version"])


@contextlib.contextmanager
def redis_cpu(client: redis.Redis, requests: int) -> Iterator[dict[str, Any]]:
    """Measure Redis's own time while the block runs; fill the yielded dict on exit.

    ``requests`` is how many client requests the block makes, so that the totals can be
    given per request as well as per command call.
    """
    result: dict[str, Any] = {}
    old = client.config_get("slowlog-*")
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", _SLOWLOG_ENTRIES)
    client.execute_command("SLOWLOG", "RESET")
    client.config_resetstat()
    try:
        yield result
        stats = client.info("commandstats")
        entries = client.execute_command("SLOWLOG", "GET", _SLOWLOG_ENTRIES)
    finally:
        for name, value in old.items():
            client.config_set(name, value)
    commands = {name.removeprefix("cmdstat_"): {
        "calls": s["calls"], "usec_per_call": s["usec_per_call"]}
        for name, s in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_slowlog", "cmdstat_info"))}
    result["commandstats"] = commands
    # A script's time includes its inner commands: count top-level commands only.
    scripts = _by_script(entries)
    total_usec = sum(s["usec_mean"] * s["calls"] for name, s in scripts.items()
                     if not name.startswith("inner:"))
    result["redis_usec_per_request"] = round(total_usec / max(requests, 1), 2)
    result["slowlog"] = scripts
    result["redis_version"] = redis_version(client)


def _by_script(entries: list[Any]) -> dict[str, dict[str, float]]:
    """Group SLOWLOG entries by script (EVALSHA and FCALL by name) or command; µs of each.

    SLOWLOG also records the commands a script runs, from a client whose address is
    ``?:0``: they are labelled ``inner:<command>`` and are part of their script's time.
    An ``EVAL``'s body is truncated in SLOWLOG, so EVALs are not told apart.
    """
    names = latchkey_script_names()
    durations: dict[str, list[int]] = {}
    for entry in entries:
        args, address = entry[3], _text(entry[4]) if len(entry) > 4 else ""
        command = _text(args[0]).lower() if args else ""
        if not command or command in ("config", "slowlog", "info"):
            continue
        if address in ("?:0", ""):
            label = f"inner:{command}"
        elif command == "evalsha" and len(args) > 1:
            sha = _text(args[1])
            label = names.get(sha, f"evalsha:{sha[:8]}")
        elif command == "fcall" and len(args) > 1:
            # latchkey_<script>_<hash of its text>: scripts.function_library names them.
            function = _text(args[1])
            label = (function.removeprefix("latchkey_").rsplit("_", 1)[0]
                     if function.startswith("latchkey_") else f"fcall:{function}")
        else:
            label = command
        durations.setdefault(label, []).append(int(entry[2]))
    return {label: {"calls": len(d), "usec_median": statistics.median(d),
                    "usec_mean": round(statistics.fmean(d), 2)}
            for label, d in sorted(durations.items())}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
