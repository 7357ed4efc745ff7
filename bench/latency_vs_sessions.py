"""Measure /v1/me and refresh latency as the number of live sessions grows.

Sessions are loaded through the store's own ``create_session`` (the same script the
server runs, from several threads); then a signed-in client
sends sequential requests and we report p50/p99 latencies at each size. Every store
operation touches one key family by its hash tag, so latency should not depend on how
many other sessions exist.

Run: ``.venv/bin/python -m bench.latency_vs_sessions [--sizes 1000 100000 1000000]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from latchkey_server.config import load_settings
from latchkey_server.redis_connection import connect
from latchkey_server.store import SessionStore
from latchkey_server.tokens import new_session_id, new_user_id

from bench.harness import login_tokens, print_json, start_bench_redis, start_server

UA = "LatchkeyDemo/1.0 (Android 14; Pixel 8) okhttp/4.12"


def load_sessions(store: SessionStore, count: int, threads: int = 8) -> None:
    """Create ``count`` live sessions of distinct users through the store's own API."""

    def create(i: int) -> None:
        store.create_session(
            user_id=new_user_id(), session_id=new_session_id(), refresh_hash="x" * 22,
            auth_level="normal", auth_time=int(time.time()), device_id=f"d{i}",
            device_name="Pixel 8", user_agent=UA, ip="203.0.113.7")

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(create, range(count), chunksize=500):
            pass


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3)}


def measure(base_url: str, requests: int) -> dict[str, dict[str, float]]:
    tokens = login_tokens(base_url)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    me, refresh = [], []
    with httpx.Client(base_url=base_url) as http:
        for _ in range(50):
            http.get("/v1/me", headers=auth)
        for _ in range(requests):
            t = time.perf_counter()
            http.get("/v1/me", headers=auth).raise_for_status()
            me.append(time.perf_counter() - t)
        current = tokens["refresh_token"]
        for _ in range(requests):
            t = time.perf_counter()
            r = http.post("/v1/auth/refresh", json={"refresh_token": current})
            refresh.append(time.perf_counter() - t)
            r.raise_for_status()
            current = r.json()["refresh_token"]
    return {"me": percentiles(me), "refresh": percentiles(refresh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_bench_redis(Path(tmp) / "redis", sock)
        url = f"unix://{sock}"
        server = start_server(Path(tmp) / "instance", {"LATCHKEY_LOG_LEVEL": "WARNING",
                                                       "LATCHKEY_BINDING_POLICY": "off"},
                              redis_url=url)
        try:
            settings = load_settings({}, {"instance_path": Path(tmp) / "i", "redis_url": url})
            store = SessionStore(connect(settings, url), settings)
            loaded = 0
            for size in sorted(args.sizes):
                load_sessions(store, size - loaded)
                loaded = size
                results[str(size)] = measure(server.base_url, args.requests)
                results[str(size)]["used_memory_mb"] = round(
                    store.client.info("memory")["used_memory"] / 2**20, 1)
        finally:
            server.stop()
            redis_proc.stop()
    print_json({"live_sessions": results, "requests_per_size": args.requests})


if __name__ == "__main__":
    main()
