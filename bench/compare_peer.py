"""Compare Latchkey's protected request with the Flask-JWT-Extended blocklist peer.

Both run under gunicorn with the same worker class (gthread), workers and threads, against
the same redis-server; wrk drives each in turn, interleaved; medians of N repetitions.
Reported: Latchkey ``/v1/me`` ÷ peer ``/protected`` (HS256 and EdDSA), and each
protected endpoint ÷ its own unauthenticated ``/healthz``.

Run: ``.venv/bin/python -m bench.compare_peer [--seconds 5] [--repetitions 5]``
(needs ``requirements-bench.txt`` and ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.harness import (
    interleave,
    login_tokens,
    print_json,
    start_bench_redis,
    start_server,
    wrk_rps,
)
from bench.peer_app import new_ed25519_pem
from tests.conftest import free_port, stop_process


@contextlib.contextmanager
def peer_server(algorithm: str, redis_url: str, workers: int,
                threads: int) -> Iterator[tuple[str, str]]:
    """Run the peer under gunicorn; yield (base URL, an access token)."""
    port = free_port()
    env = {**os.environ, "PEER_ALG": algorithm, "PEER_REDIS_URL": redis_url,
           "PEER_SECRET": os.urandom(32).hex(), "PEER_PRIVATE_KEY_PEM": new_ed25519_pem()}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
         "--log-level", "warning", "bench.peer_app:create_app()"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        token = httpx.post(base + "/token").json()["access_token"]
        yield base, token
    finally:
        stop_process(proc, timeout_seconds=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_bench_redis(Path(tmp) / "redis", sock)
        stack.callback(redis_proc.stop)
        url = f"unix://{sock}"
        server = start_server(Path(tmp) / "instance", {
            "LATCHKEY_WORKERS": str(args.workers), "LATCHKEY_THREADS": str(args.threads),
            "LATCHKEY_LOG_LEVEL": "WARNING"}, redis_url=url)
        stack.callback(server.stop)
        tokens = login_tokens(server.base_url)
        hs_base, hs_token = stack.enter_context(
            peer_server("HS256", url, args.workers, args.threads))
        ed_base, ed_token = stack.enter_context(
            peer_server("EdDSA", url, args.workers, args.threads))

        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        s = args.seconds
        medians = interleave({
            "latchkey_me": lambda: wrk_rps(server.base_url + "/v1/me", seconds=s,
                                           headers=bearer(tokens["access_token"])),
            "latchkey_healthz": lambda: wrk_rps(server.base_url + "/healthz", seconds=s),
            "peer_hs256_protected": lambda: wrk_rps(hs_base + "/protected", seconds=s,
                                                    headers=bearer(hs_token)),
            "peer_eddsa_protected": lambda: wrk_rps(ed_base + "/protected", seconds=s,
                                                    headers=bearer(ed_token)),
            "peer_healthz": lambda: wrk_rps(hs_base + "/healthz", seconds=s),
        }, args.repetitions)
    print_json({
        **{f"{k}_rps": round(v, 1) for k, v in medians.items()},
        "latchkey_me_over_peer_hs256": round(
            medians["latchkey_me"] / medians["peer_hs256_protected"], 3),
        "latchkey_me_over_peer_eddsa": round(
            medians["latchkey_me"] / medians["peer_eddsa_protected"], 3),
        "latchkey_me_over_own_healthz": round(
            medians["latchkey_me"] / medians["latchkey_healthz"], 3),
        "peer_hs256_over_own_healthz": round(
            medians["peer_hs256_protected"] / medians["peer_healthz"], 3),
        "peer_eddsa_over_own_healthz": round(
            medians["peer_eddsa_protected"] / medians["peer_healthz"], 3),
        "workers": args.workers, "threads": args.threads, "seconds": s,
        "repetitions": args.repetitions,
    })


if __name__ == "__main__":
    main()
