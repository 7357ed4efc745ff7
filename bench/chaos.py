"""The long chaos run: many SDK clients refreshing for minutes through a lossy network.

The same workload as the CI test (``tests/chaos/workload.py``), for longer and with more
clients: a real redis-server and ``latchkey-server`` (gunicorn) with a short access-token
lifetime, a :class:`tests.netproxy.LoopbackProxy` in front that drops and delays a share
of responses after the server acted, honest clients that must never be logged out, and a
thief per victim replaying a copied refresh token after the grace window, which must be
revoked every time. Prints one JSON document (what ``docs/PERFORMANCE.md`` "Chaos" quotes)
and exits 1 if there was a false logout, an unexpected error or an uncaught replay.

Run: ``.venv/bin/python -m bench.chaos [--clients 40 --threads 3 --duration 300]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import PASSWORD, print_json, start_redis, start_server
from tests.chaos.workload import ChaosConfig, run_chaos
from tests.conftest import unique_username
from tests.netproxy import LoopbackProxy


def _register(base_url: str, n: int) -> list[str]:
    names = [unique_username("chaos") for _ in range(n)]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for name in names:
            r = http.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
            r.raise_for_status()
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=40, help="honest SDK clients")
    parser.add_argument("--threads", type=int, default=3, help="threads per honest client")
    parser.add_argument("--victims", type=int, default=10, help="clients whose token is stolen")
    parser.add_argument("--duration", type=float, default=300, help="seconds of chaos")
    parser.add_argument("--drop", type=float, default=0.10, help="share of responses dropped")
    parser.add_argument("--delay", type=float, default=0.10, help="share of responses delayed")
    parser.add_argument("--max-delay", type=float, default=1.0, help="longest delay, seconds")
    parser.add_argument("--ttl", type=int, default=2, help="access-token lifetime, seconds")
    parser.add_argument("--grace", type=int, default=10, help="reuse grace window, seconds")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    config = ChaosConfig(
        clients=args.clients, threads_per_client=args.threads, victims=args.victims,
        duration_seconds=args.duration, drop_rate=args.drop, delay_rate=args.delay,
        delay_seconds=(0.05, args.max_delay), grace_seconds=args.grace, seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc = start_redis(Path(tmp) / "redis")
        server = start_server(Path(tmp) / "instance", {
            "LATCHKEY_ACCESS_TOKEN_TTL": str(args.ttl),
            "LATCHKEY_REFRESH_REUSE_GRACE": str(args.grace),
            "LATCHKEY_WORKERS": str(args.workers),
            "LATCHKEY_LOG_LEVEL": "WARNING",  # minutes of request lines are not the point
        }, redis_url=redis_proc.url)
        proxy = LoopbackProxy(server.base_url, record=False, seed=args.seed).start()
        try:
            users = _register(server.base_url, config.clients + config.victims)
            started = time.monotonic()
            report = run_chaos(server.base_url, proxy, users, PASSWORD, config)
            result = report.as_dict()
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            result["server_tracebacks"] = server.logs().count("Traceback")
        finally:
            proxy.stop()
            server.stop()
            redis_proc.stop()
    print_json(result)
    ok = (report.false_logouts == 0 and report.api_calls_other_errors == 0
          and report.reuse_detections == report.theft_replays == config.victims
          and report.victims_signed_out_reuse == config.victims)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
