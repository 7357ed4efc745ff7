"""Measure a backend team's endpoint protected by ``latchkey_resource`` (issue 15).

The same ``GET /hello`` (``bench/resource_app.py``) three ways: unprotected (``open``),
under ``latchkey_resource`` (``latchkey``: JWKS-verified JWT plus the session's one
``verify_touch`` round trip, so idle, absolute, binding and revocation are enforced), and
under Flask-JWT-Extended with its documented Redis blocklist (``fje_hs256``,
``fje_eddsa``: ``bench/peer_app.py``'s configuration, which checks the signature and one
``GET`` of the ``jti`` and nothing else). Every setup uses one Redis: the stock
redis-server 7 on TCP loopback with its compiled-in defaults, which a real Latchkey
(``latchkey-server`` with its defaults, ``harness.start_latchkey``) also uses, since it
signs the tokens, serves the JWKS and holds the sessions.

1. **In process** (``in_process``): each Flask app's WSGI callable called directly with a
   prepared environ (no HTTP server, no load generator sharing the cores), µs per request,
   ``--requests`` per sample, the modes interleaved round by round, medians of
   ``--repetitions``; the same for the FastAPI app's ASGI callable (``open`` and the
   ``LatchkeySession`` dependency). Issue 15's goals are read here: the auth layer adds
   at most 150 µs over ``open``, and the protected endpoint serves at least 1.5 times the
   Flask-JWT-Extended one (the ratio of µs per request, the peer's over ours).
2. **Under a real server** (``served``): each Flask app under gunicorn ``-w 2``, ``sync``
   and ``gthread --threads 8`` (the same worker class on both sides of every ratio), and
   the FastAPI apps under one ``uvicorn`` process (see ``uvicorn_command``); wrk
   ``--latency -t1 -c16`` (the harness), every server's runs interleaved with every
   other's, medians of the repetitions.

Also: the Redis commands one request sends on each protected path (MONITOR), and with
``--profile`` a cProfile of the protected Flask request in process.

Run: ``.venv/bin/python -m bench.resource_server [--requests 2000] [--repetitions 5]
[--seconds 5] [--profile] [--quick]`` (needs ``requirements-bench.txt`` and ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import redis

from bench.harness import (
    BENCH_USER_AGENT,
    WrkResult,
    interleave_samples,
    login_tokens,
    print_json,
    start_latchkey,
    wrk_run,
)
from bench.peer_app import new_ed25519_pem
from bench.redis_stats import redis_version, start_stock_redis
from bench.resource_app import (
    ASGI_MODES,
    FLASK_MODES,
    PATH,
    create_app,
    create_asgi_app,
    create_floor_app,
)
from tests.conftest import free_port, stop_process
from tests.server.ops_support import client_commands_during

# Flask variants: name → (RS_MODE, PEER_ALG or None).
FLASK_VARIANTS: dict[str, tuple[str, str | None]] = {
    "open": ("open", None), "latchkey": ("latchkey", None),
    "fje_hs256": ("fje", "HS256"), "fje_eddsa": ("fje", "EdDSA")}
WORKER_CLASSES = ("sync", "gthread")
# ``--baseline REV``: that revision's latchkey_resource, imported under this name, measured
# as the ``*_before`` variants beside the current one in the same rounds.
BEFORE_PACKAGE = "latchkey_resource_before"
BEFORE_SUFFIX = "_before"
AUTH_LAYER_GOAL_US = 150.0
OVER_PEER_GOAL = 1.5
PROFILE_FRAMES = "latchkey_resource|jwt/|redis/|flask/app|werkzeug"
assert {mode for mode, _ in FLASK_VARIANTS.values()} == set(FLASK_MODES)


class Sample(NamedTuple):
    """One sample's cost per request: wall-clock µs, and CPU µs of this whole process.

    On a shared machine the wall clock includes every moment another process held the
    core (the Redis round trip gives the scheduler a chance at every request); the
    process's CPU time (``time.process_time``, all its threads) does not, so the app's
    own work per request is read from it, and Redis's from ``INFO commandstats``.
    """

    wall_us: float
    cpu_us: float


def timed(run: Callable[[], object], count: int) -> Sample:
    """Run ``run`` (which makes ``count`` requests); return its cost per request."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Sample((time.perf_counter() - wall) / count * 1e6,
                  (time.process_time() - cpu) / count * 1e6)


class Bench:
    """The shared setup: Redis, a Latchkey server, and the environment every app reads."""

    def __init__(self, redis_url: str, admin: redis.Redis, latchkey_url: str) -> None:
        self.redis_url, self.admin, self.latchkey_url = redis_url, admin, latchkey_url
        self.env = {"RS_ISSUER": latchkey_url, "RS_REDIS_URL": redis_url,
                    "PEER_REDIS_URL": redis_url, "PEER_SECRET": os.urandom(32).hex(),
                    "PEER_PRIVATE_KEY_PEM": new_ed25519_pem()}

    def variant_env(self, variant: str) -> dict[str, str]:
        package = "latchkey_resource"
        if variant.endswith(BEFORE_SUFFIX):
            variant, package = variant[:-len(BEFORE_SUFFIX)], BEFORE_PACKAGE
        mode, algorithm = FLASK_VARIANTS.get(variant, (variant, None))
        return {**self.env, "RS_MODE": mode, "PEER_ALG": algorithm or "HS256",
                "RS_PACKAGE": package}

    def load_libraries(self) -> None:
        """Have the token server run its own check once, which loads the ``verify_touch``
        library as in any deployment that serves requests: a resource server calls it
        (FCALL) and never loads it (``latchkey_resource.scripts``)."""
        token = self.latchkey_token()
        httpx.get(f"{self.latchkey_url}/v1/me", timeout=30, headers={
            "Authorization": f"Bearer {token}",
            "User-Agent": BENCH_USER_AGENT}).raise_for_status()

    def latchkey_token(self) -> str:
        """A fresh access token of a fresh session (signed in with the bench User-Agent)."""
        return login_tokens(self.latchkey_url)["access_token"]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block (the apps read it when built)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# -- in process: WSGI ------------------------------------------------------------------
class WsgiCaller:
    """Call a WSGI app with one prepared request, as a server would, without the server."""

    def __init__(self, app: Any, token: Callable[[], str] | None) -> None:
        from werkzeug.test import EnvironBuilder

        self.app, self.token, self.status = app, token, ""
        self._builder = EnvironBuilder
        self.refresh()

    def refresh(self) -> None:
        """Take a fresh token (each sample, so none expires during a long run)."""
        headers = {"User-Agent": BENCH_USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token()}"
        self.environ = self._builder(path=PATH, headers=list(headers.items()),
                                     environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()

    def _start_response(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        self.status = status
        return lambda data: None

    def once(self) -> None:
        environ = dict(self.environ)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = self.app(environ, self._start_response)
        try:
            b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()

    def per_request_us(self, count: int) -> Sample:
        self.refresh()
        self.once()
        if not self.status.startswith("200"):
            raise RuntimeError(f"the benchmark request was answered {self.status}")

        def run() -> None:
            for _ in range(count):
                self.once()

        sample = timed(run, count)
        if not self.status.startswith("200"):
            raise RuntimeError(f"the benchmark request was answered {self.status}")
        return sample


# -- in process: ASGI ------------------------------------------------------------------
class AsgiCaller:
    """Call an ASGI app with one prepared request on one event loop, without a server."""

    def __init__(self, app: Any, token: Callable[[], str] | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.token, self.loop, self.status = app, token, loop, 0
        self.refresh()

    def refresh(self) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"user-agent", BENCH_USER_AGENT.encode())]
        if self.token:
            headers.append((b"authorization", f"Bearer {self.token()}".encode()))
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                      "method": "GET", "scheme": "http", "path": PATH,
                      "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
                      "headers": headers, "client": ("127.0.0.1", 40000),
                      "server": ("127.0.0.1", 80)}

    async def _once(self) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await self.app(dict(self.scope), receive, send)

    async def _many(self, count: int) -> None:
        for _ in range(count):
            await self._once()

    def per_request_us(self, count: int) -> Sample:
        self.refresh()
        self.loop.run_until_complete(self._once())
        if self.status != 200:
            raise RuntimeError(f"the benchmark request was answered {self.status}")
        sample = timed(lambda: self.loop.run_until_complete(self._many(count)), count)
        if self.status != 200:
            raise RuntimeError(f"the benchmark request was answered {self.status}")
        return sample


class CallCaller:
    """Time a plain call the same way (the auth layer's parts without a framework)."""

    def __init__(self, make: Callable[[], Callable[[], object]]) -> None:
        self.make = make
        self.once = make()

    def per_request_us(self, count: int) -> Sample:
        self.once = self.make()  # a fresh token, as the app callers take
        self.once()

        def run() -> None:
            for _ in range(count):
                self.once()

        return timed(run, count)


def parts(bench: Bench) -> dict[str, CallCaller | WsgiCaller]:
    """What the protected request is made of, each timed alone in the same rounds.

    ``verify``: ``ResourceVerifier.verify`` called directly (the framework-neutral call:
    token parse, cached signature check, binding inputs, the ``verify_touch`` round trip);
    ``redis_ping``: one round trip that does nothing (redis-py over the same TCP
    loopback), the floor under any store check, ours or the blocklist's ``GET``;
    ``flask_open_one_get``: the unprotected view plus one Redis ``GET`` and no auth
    (``resource_app.create_floor_app``), the floor of any auth layer that asks a store.
    """
    from latchkey_resource import ResourceVerifier

    verifier = ResourceVerifier(bench.latchkey_url, bench.redis_url)
    headers = {"User-Agent": BENCH_USER_AGENT}
    url = "http://localhost" + PATH

    def verify() -> Callable[[], object]:
        authorization = f"Bearer {bench.latchkey_token()}"
        return lambda: verifier.verify(authorization, method="GET", url=url,
                                       headers=headers, remote_addr="127.0.0.1")

    ping_client = redis.Redis.from_url(bench.redis_url)
    return {"verify": CallCaller(verify), "redis_ping": CallCaller(lambda: ping_client.ping),
            "flask_open_one_get": WsgiCaller(create_floor_app(bench.redis_url), None)}


def redis_usec_per_verify_touch(admin: redis.Redis, caller: WsgiCaller,
                                requests: int) -> float:
    """Redis's own time per ``EVALSHA`` (``INFO commandstats``) over protected requests."""
    caller.per_request_us(50)
    admin.config_resetstat()
    caller.per_request_us(requests)
    stats = admin.info("commandstats")
    # FCALL once the token server has loaded the library, EVALSHA before (scripts.Script).
    entry = stats.get("cmdstat_fcall") or stats["cmdstat_evalsha"]
    return float(entry["usec_per_call"])


def fje_token(app: Any) -> Callable[[], str]:
    """Return a function minting the peer app's token through its own ``/token``."""
    client = app.test_client()
    return lambda: client.post("/token").get_json()["access_token"]


def flask_apps(bench: Bench, baseline: bool = False,
               ) -> dict[str, tuple[Any, Callable[[], str] | None]]:
    """Build each Flask variant in this process, with how to get its token."""
    apps: dict[str, tuple[Any, Callable[[], str] | None]] = {}
    variants = [*FLASK_VARIANTS, *(["latchkey" + BEFORE_SUFFIX] if baseline else [])]
    for variant in variants:
        mode = FLASK_VARIANTS[variant.removesuffix(BEFORE_SUFFIX)][0]
        with environment(bench.variant_env(variant)):
            app = create_app(mode)
        token = None if mode == "open" else (
            bench.latchkey_token if mode == "latchkey" else fje_token(app))
        apps[variant] = (app, token)
    return apps


def in_process(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """µs per request for each Flask variant and each FastAPI mode, interleaved."""
    loop = asyncio.new_event_loop()
    callers: dict[str, WsgiCaller | AsgiCaller | CallCaller] = {
        f"flask_{name}": WsgiCaller(app, token) for name, (app, token) in
        flask_apps(bench, bool(args.baseline)).items()}
    asgi_variants = [*ASGI_MODES, *(["latchkey" + BEFORE_SUFFIX] if args.baseline else [])]
    for variant in asgi_variants:
        mode = variant.removesuffix(BEFORE_SUFFIX)
        with environment(bench.variant_env(variant)):
            app = create_asgi_app(mode)
        callers[f"fastapi_{variant}"] = AsgiCaller(
            app, bench.latchkey_token if mode == "latchkey" else None, loop)
    callers.update({f"part_{name}": caller for name, caller in parts(bench).items()})
    for caller in callers.values():  # warm: pools, scripts, JWKS, signature caches
        caller.per_request_us(max(args.requests // 10, 50))
    def sample(caller: WsgiCaller | AsgiCaller | CallCaller) -> Callable[[], Sample]:
        return lambda: caller.per_request_us(args.requests)

    samples = interleave_samples({name: sample(caller) for name, caller in callers.items()},
                                 args.repetitions)
    us = {name: round(statistics.median(x.wall_us for x in v), 1)
          for name, v in samples.items()}
    cpu = {name: round(statistics.median(x.cpu_us for x in v), 1)
           for name, v in samples.items()}
    flask_layer = us["flask_latchkey"] - us["flask_open"]
    fastapi_layer = us["fastapi_latchkey"] - us["fastapi_open"]
    result: dict[str, Any] = {
        "us_per_request": us,
        "us_samples": {name: [round(x.wall_us, 1) for x in v] for name, v in samples.items()},
        "cpu_us_per_request": cpu,
        "flask_auth_layer_cpu_us": round(cpu["flask_latchkey"] - cpu["flask_open"], 1),
        "fastapi_auth_layer_cpu_us": round(cpu["fastapi_latchkey"] - cpu["fastapi_open"], 1),
        "fje_hs256_auth_layer_cpu_us": round(cpu["flask_fje_hs256"] - cpu["flask_open"], 1),
        "latchkey_over_fje_hs256_cpu": round(cpu["flask_fje_hs256"] / cpu["flask_latchkey"],
                                             3),
        "latchkey_over_fje_eddsa_cpu": round(cpu["flask_fje_eddsa"] / cpu["flask_latchkey"],
                                             3),
        "flask_auth_layer_us": round(flask_layer, 1),
        "fastapi_auth_layer_us": round(fastapi_layer, 1),
        "fje_hs256_auth_layer_us": round(us["flask_fje_hs256"] - us["flask_open"], 1),
        "fje_eddsa_auth_layer_us": round(us["flask_fje_eddsa"] - us["flask_open"], 1),
        # Throughput ratios in one process: requests per second are 1e6 / µs per request.
        "latchkey_over_fje_hs256": round(us["flask_fje_hs256"] / us["flask_latchkey"], 3),
        "latchkey_over_fje_eddsa": round(us["flask_fje_eddsa"] / us["flask_latchkey"], 3),
        "latchkey_over_open": round(us["flask_open"] / us["flask_latchkey"], 3),
        "fastapi_latchkey_over_open": round(us["fastapi_open"] / us["fastapi_latchkey"], 3),
    }
    if args.baseline:
        before = {"flask": "flask_latchkey", "fastapi": "fastapi_latchkey"}
        result["before_after"] = {"baseline": args.baseline, **{
            f"{framework}_auth_layer_{clock}_us": {
                "before": round(table[f"{name}{BEFORE_SUFFIX}"] - table[f"{framework}_open"], 1),
                "after": round(table[name] - table[f"{framework}_open"], 1)}
            for framework, name in before.items()
            for clock, table in (("wall", us), ("cpu", cpu))},
            "over_fje_hs256_cpu": {
                "before": round(cpu["flask_fje_hs256"] / cpu["flask_latchkey_before"], 3),
                "after": round(cpu["flask_fje_hs256"] / cpu["flask_latchkey"], 3)},
            "over_fje_hs256_wall": {
                "before": round(us["flask_fje_hs256"] / us["flask_latchkey_before"], 3),
                "after": round(us["flask_fje_hs256"] / us["flask_latchkey"], 3)}}
        result["redis_commands_per_request"] = {"latchkey_before": commands_per_request(
            bench.admin, callers["flask_latchkey_before"])}
    # The auth layer taken apart: the framework-neutral verify() against the same request
    # under Flask, and inside verify() Redis's own script time and the bare round trip.
    flask_latchkey = callers["flask_latchkey"]
    assert isinstance(flask_latchkey, WsgiCaller)
    redis_script_us = redis_usec_per_verify_touch(bench.admin, flask_latchkey, args.requests)
    result["auth_layer_parts_us"] = {
        "verify_call_wall": us["part_verify"],
        "verify_call_cpu": cpu["part_verify"],
        "flask_adapter_cpu_over_verify": round(
            cpu["flask_latchkey"] - cpu["flask_open"] - cpu["part_verify"], 1),
        "redis_ping_round_trip_wall": us["part_redis_ping"],
        "redis_ping_round_trip_cpu": cpu["part_redis_ping"],
        "redis_verify_touch_script": round(redis_script_us, 1),
        # What the layer costs where nothing else competes for the cores: this process's
        # CPU for it plus Redis's time in the script (the loopback hop itself excluded).
        # Over the floor: the view that also waits for one Redis GET, without auth.
        "flask_latchkey_over_one_get_floor_wall": round(
            us["flask_latchkey"] - us["part_flask_open_one_get"], 1),
        "flask_latchkey_over_one_get_floor_cpu": round(
            cpu["flask_latchkey"] - cpu["part_flask_open_one_get"], 1),
        "fje_hs256_over_one_get_floor_cpu": round(
            cpu["flask_fje_hs256"] - cpu["part_flask_open_one_get"], 1),
        "flask_auth_layer_cpu_plus_redis_script": round(
            cpu["flask_latchkey"] - cpu["flask_open"] + redis_script_us, 1),
    }
    # Each goal read twice: on the wall clock, and on this process's CPU (plus Redis's own
    # script time for the layer), which a loaded machine moves much less.
    layer_cpu = result["auth_layer_parts_us"]["flask_auth_layer_cpu_plus_redis_script"]
    result["goals"] = {
        f"flask_auth_layer_at_most_{AUTH_LAYER_GOAL_US:g}_us_wall":
            flask_layer <= AUTH_LAYER_GOAL_US,
        f"flask_auth_layer_at_most_{AUTH_LAYER_GOAL_US:g}_us_cpu_plus_redis_script":
            layer_cpu <= AUTH_LAYER_GOAL_US,
        f"fastapi_auth_layer_at_most_{AUTH_LAYER_GOAL_US:g}_us_wall":
            fastapi_layer <= AUTH_LAYER_GOAL_US,
        f"over_fje_hs256_at_least_{OVER_PEER_GOAL:g}_wall":
            result["latchkey_over_fje_hs256"] >= OVER_PEER_GOAL,
        f"over_fje_hs256_at_least_{OVER_PEER_GOAL:g}_cpu":
            result["latchkey_over_fje_hs256_cpu"] >= OVER_PEER_GOAL,
        f"over_fje_eddsa_at_least_{OVER_PEER_GOAL:g}_wall":
            result["latchkey_over_fje_eddsa"] >= OVER_PEER_GOAL,
        f"over_fje_eddsa_at_least_{OVER_PEER_GOAL:g}_cpu":
            result["latchkey_over_fje_eddsa_cpu"] >= OVER_PEER_GOAL,
    }
    result.setdefault("redis_commands_per_request", {}).update({
        name: commands_per_request(bench.admin, callers[f"flask_{name}"])
        for name in ("latchkey", "fje_hs256")})
    result["redis_commands_per_request"]["fastapi_latchkey"] = commands_per_request(
        bench.admin, callers["fastapi_latchkey"])
    if args.profile:
        result["profile_top"] = profile(callers["flask_latchkey"], args.requests)
    loop.close()
    return result


def commands_per_request(admin: redis.Redis,
                         caller: WsgiCaller | AsgiCaller | CallCaller) -> list[str]:
    """Return the Redis commands one request sends (median of 7, steady state)."""
    caller.per_request_us(20)
    admin.ping()  # the admin connection made before MONITOR counts
    once: Callable[[], object] = (
        (lambda: caller.loop.run_until_complete(caller._once()))
        if isinstance(caller, AsgiCaller) else caller.once)
    counted = [client_commands_during(admin, once) for _ in range(7)]
    return sorted(counted, key=len)[len(counted) // 2]


def profile(caller: WsgiCaller | AsgiCaller | CallCaller, requests: int) -> list[str]:
    """Profile the protected request; print the full listing to stderr, return the top."""
    profiler = cProfile.Profile()
    profiler.enable()
    caller.per_request_us(requests)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(PROFILE_FRAMES, 25)
    print(out.getvalue(), file=sys.stderr)
    return [line.strip() for line in out.getvalue().splitlines()
            if line.strip() and line.strip()[0].isdigit()][:12]


# -- under real servers ----------------------------------------------------------------
@contextlib.contextmanager
def served(command: list[str], env: dict[str, str]) -> Iterator[str]:
    """Run an app server on a free loopback port (``{port}`` in ``command``); yield its URL."""
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([part.format(port=port) for part in command],
                            env={**os.environ, **env}, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + PATH, timeout=1)  # any answer: the server is up
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited at start")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{command[0]} did not start")
        yield base
    finally:
        stop_process(proc, timeout_seconds=20)


def gunicorn_command(worker_class: str, args: argparse.Namespace) -> list[str]:
    model = ["--worker-class", worker_class]
    if worker_class == "gthread":
        model += ["--threads", str(args.threads)]
    return [str(Path(sys.executable).parent / "gunicorn"), "--bind", "127.0.0.1:{port}",
            *model, "--workers", str(args.workers), "--log-level", "warning",
            "bench.resource_app:create_app()"]


def uvicorn_command(args: argparse.Namespace) -> list[str]:
    """One uvicorn process: with ``--workers N`` the accepted sockets lose TCP_NODELAY.

    uvicorn's supervisor binds the listening socket without ``proto``, and asyncio sets
    TCP_NODELAY only on sockets that report IPPROTO_TCP (uvicorn issue 3149, open): every
    keep-alive request after the first then waits ~40 ms for the peer's delayed ACK
    (measured here: 44 ms p50 at ``-c1`` with ``--workers 2``, 0.4 ms with one process).
    """
    return [str(Path(sys.executable).parent / "uvicorn"), "--factory",
            "bench.resource_app:create_asgi_app", "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", "--no-access-log"]


def under_servers(bench: Bench, args: argparse.Namespace,
                  stack: contextlib.ExitStack) -> dict[str, Any]:
    """wrk against every server, every run interleaved with every other."""
    runs: dict[str, Callable[[], WrkResult]] = {}

    def wrk(url: str, token: Callable[[], str] | None) -> Callable[[], WrkResult]:
        return lambda: wrk_run(url, seconds=args.seconds, connections=args.connections,
                               threads=args.wrk_threads, headers={
                                   "Authorization": f"Bearer {token()}"} if token else None)

    for worker_class in WORKER_CLASSES:
        for variant, (mode, _) in FLASK_VARIANTS.items():
            base = stack.enter_context(served(gunicorn_command(worker_class, args),
                                              bench.variant_env(variant)))
            token = None if mode == "open" else (
                bench.latchkey_token if mode == "latchkey" else
                (lambda base=base: httpx.post(base + "/token", timeout=10).json()[
                    "access_token"]))
            runs[f"gunicorn_{worker_class}.{variant}"] = wrk(base + PATH, token)
    for mode in ASGI_MODES:
        base = stack.enter_context(served(uvicorn_command(args), bench.variant_env(mode)))
        runs[f"uvicorn.{mode}"] = wrk(
            base + PATH, bench.latchkey_token if mode == "latchkey" else None)
    samples = interleave_samples(runs, args.repetitions)
    figures: dict[str, dict[str, Any]] = {
        name: {"rps": round(statistics.median(s.rps for s in v), 1),
               "p50_ms": round(statistics.median(s.p50_ms for s in v), 2),
               "p99_ms": round(statistics.median(s.p99_ms for s in v), 2),
               "rps_samples": [round(s.rps, 1) for s in v]}
        for name, v in samples.items()}
    ratios: dict[str, float] = {}
    for server in (*(f"gunicorn_{w}" for w in WORKER_CLASSES), "uvicorn"):
        mine = {k.split(".", 1)[1]: float(summary["rps"]) for k, summary in figures.items()
                if k.startswith(server + ".")}
        ratios[f"{server}.latchkey_over_open"] = round(mine["latchkey"] / mine["open"], 3)
        for peer in ("fje_hs256", "fje_eddsa"):
            if peer in mine:
                ratios[f"{server}.latchkey_over_{peer}"] = round(
                    mine["latchkey"] / mine[peer], 3)
    return {"throughput_and_latency": figures, "ratios": ratios}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per in-process sample")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="gthread threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--skip-served", action="store_true",
                        help="in process only (no gunicorn, uvicorn or wrk)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the protected Flask request in process")
    parser.add_argument("--baseline", metavar="REV", default="",
                        help="also measure REV's latchkey_resource (a git revision) in "
                             "process, interleaved with the current one")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 requests, 1 repetition, 1 s per wrk run")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repetitions, args.seconds = 300, 1, 1
    return args


def import_baseline(revision: str, into: Path) -> None:
    """Make ``revision``'s latchkey_resource importable as ``BEFORE_PACKAGE``."""
    into.mkdir()
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", revision, "resource_server/latchkey_resource"],
        check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "resource_server" / "latchkey_resource").rename(into / BEFORE_PACKAGE)
    sys.path.insert(0, str(into))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="lkr-") as tmp, contextlib.ExitStack() as stack:
        redis_proc = start_stock_redis(Path(tmp) / "redis")
        stack.callback(redis_proc.stop)
        latchkey = start_latchkey(Path(tmp) / "instance", redis_proc.url)
        stack.callback(latchkey.stop)
        bench = Bench(redis_proc.url, redis_proc.client(decode=False), latchkey.base_url)
        bench.load_libraries()
        if args.baseline:
            import_baseline(args.baseline, Path(tmp) / "baseline")
        started = os.getloadavg()
        result: dict[str, Any] = {"in_process": in_process(bench, args)}
        if not args.skip_served:
            result["served"] = under_servers(bench, args, stack)
        version = redis_version(bench.admin)
    print_json({**result, "redis": f"redis-server {version}, TCP loopback, defaults",
                "load_average_at_start": [round(v, 2) for v in started],
                "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                "nproc": os.cpu_count(), "settings": vars(args),
                "wrk": f"wrk --latency -t{args.wrk_threads} -c{args.connections} "
                       f"-d{args.seconds}s"})


if __name__ == "__main__":
    main()
