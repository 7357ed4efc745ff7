"""Measure the client SDK's per-request overhead against raw httpx, in the same run.

Two comparisons, each interleaving repetitions so machine noise hits both sides alike:

1. **End to end** (the target, <= 5 %): ``GET /v1/me`` against a real ``latchkey-server``
   on loopback with a real redis-server, through ``LatchkeyClient.get`` versus a plain
   ``httpx.Client`` with ``Authorization: Bearer`` set by hand. Same keep-alive connection
   reuse on both sides; the access token is fresh, so no refresh happens inside the window.
2. **Client CPU only**: the same two calls against ``httpx.MockTransport`` (no network, no
   server), which isolates what the SDK itself adds per request, in microseconds. This one
   is a microbenchmark of client code, not a stand-in for the server.

Run: ``.venv/bin/python -m bench.sdk_overhead`` (about half a minute).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from latchkey_client import LatchkeyClient

from bench.harness import (
    PASSWORD,
    login_tokens,
    print_json,
    start_redis,
    start_server,
    unique_username,
)

REQUESTS_PER_SAMPLE = 200
REPETITIONS = 15


def per_request_seconds(call: Callable[[], object], n: int = REQUESTS_PER_SAMPLE) -> float:
    """Return the mean wall time of one call over ``n`` sequential calls."""
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n


def paired(raw: Callable[[], object], sdk: Callable[[], object], n: int,
           repetitions: int) -> dict[str, float]:
    """Alternate raw and SDK samples; return the medians and the median of paired ratios.

    A ratio taken from two adjacent samples cancels slow drifts of a shared machine, and
    its median ignores the odd sample a neighbour's burst of work spoiled.
    """
    raw_s: list[float] = []
    sdk_s: list[float] = []
    for i in range(repetitions):
        # Alternate who goes first so neither side always gets the warmer cache.
        order = ((raw_s, raw), (sdk_s, sdk)) if i % 2 == 0 else ((sdk_s, sdk), (raw_s, raw))
        for samples, call in order:
            samples.append(per_request_seconds(call, n))
    pairs = list(zip(raw_s, sdk_s, strict=True))
    return {"raw_httpx": statistics.median(raw_s), "sdk": statistics.median(sdk_s),
            "ratio": statistics.median(b / a for a, b in pairs),
            "diff": statistics.median(b - a for a, b in pairs)}


def end_to_end() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="latchkey-bench-"))
    redis = start_redis(tmp / "redis")
    server = start_server(tmp / "server", {"LATCHKEY_LOG_LEVEL": "WARNING"},
                          redis_url=redis.url)
    try:
        tokens = login_tokens(server.base_url)  # the raw side's own session
        raw = httpx.Client(base_url=server.base_url, timeout=10,
                           headers={"Authorization": f"Bearer {tokens['access_token']}"})
        sdk = LatchkeyClient(base_url=server.base_url)
        name = unique_username("bench-sdk")
        sdk.register(username=name, password=PASSWORD)
        sdk.login(username=name, password=PASSWORD)
        for _ in range(50):  # warm both connection pools and code paths
            raw.get("/v1/me").raise_for_status()
            sdk.get("/v1/me")
        medians = paired(lambda: raw.get("/v1/me"), lambda: sdk.get("/v1/me"),
                         REQUESTS_PER_SAMPLE, REPETITIONS)
        assert sdk.auth.refresh_requests == 0, "a refresh inside the window would skew this"
        sdk.logout()
        sdk.close()
        raw.close()
        return medians
    finally:
        server.stop()
        redis.stop()


def client_cpu_only() -> dict[str, float]:
    body = b'{"user_id":"u","username":"bench","session_id":"s","auth_level":"normal"}'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json={
                "access_token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.sig", "token_type": "Bearer",
                "expires_in": 300, "refresh_token": "lkr_" + "A" * 102, "session_id": "s",
                "idle_timeout": 1800, "absolute_expires_in": 86400, "auth_level": "normal"})
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    transport = httpx.MockTransport(handler)
    bearer = "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.sig"
    raw = httpx.Client(base_url="http://127.0.0.1:9", transport=transport,
                       headers={"Authorization": bearer})
    sdk = LatchkeyClient(base_url="http://127.0.0.1:9", transport=transport, idle_logout=False)
    sdk.login(username="bench", password="x" * 12)
    return paired(lambda: raw.get("/v1/me"), lambda: sdk.get("/v1/me"), 2000, REPETITIONS)


def main() -> None:
    e2e = end_to_end()
    cpu = client_cpu_only()
    print_json({
        "benchmark": "sdk_overhead",
        "end_to_end_us": {k: round(e2e[k] * 1e6, 1) for k in ("raw_httpx", "sdk")},
        "end_to_end_overhead_percent": round((e2e["ratio"] - 1) * 100, 2),
        "end_to_end_overhead_us": round(e2e["diff"] * 1e6, 1),
        "client_cpu_us": {k: round(cpu[k] * 1e6, 1) for k in ("raw_httpx", "sdk")},
        "client_cpu_overhead_percent": round((cpu["ratio"] - 1) * 100, 2),
        "client_cpu_overhead_us": round(cpu["diff"] * 1e6, 1),
        "requests_per_sample": REQUESTS_PER_SAMPLE,
        "repetitions": REPETITIONS,
        "statistic": "medians of per-sample means; overhead = median of paired sample ratios",
    })


if __name__ == "__main__":
    main()
