"""Measure what DPoP (RFC 9449) costs: a protected request and a refresh, with and without.

In one run, on one server (gunicorn, default workers, redis-server on a unix socket):

- ``/v1/me`` with ``Authorization: DPoP`` + a fresh proof per request, against ``/v1/me``
  with a Bearer token of an unbound session (goal: DPoP >= 0.75x);
- ``/v1/auth/refresh`` of a bound session with a fresh proof per rotation, against a
  refresh of an unbound session (goal >= 0.75x);
- the per-proof verification cost of ``latchkey_resource.dpop.verify_proof`` for ES256 and
  EdDSA (in process, median of batches), beside the access token's own signature check.

The two sides of each pair are interleaved, repetition by repetition, and medians are
reported (bench/harness.py). A proof is single use, and wrk cannot sign, so each wrk thread
gets its own signed-in user and a pool of proofs made just before the run, used in order.
The pool holds more proofs than the thread can send in the run; a proof used twice would
be refused, and any refused request fails the run (harness.wrk_run). Each user's jti set
then holds a few thousand proofs, more than a phone makes in two minutes, so the bench
server raises ``DPOP_JTI_LIMIT``. The ZSET commands per request are measured all the same.

Run: ``.venv/bin/python -m bench.dpop_cost [--seconds 5] [--repetitions 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    BENCH_USER_AGENT,
    PASSWORD,
    interleave,
    print_json,
    start_bench_redis,
    start_server,
    unique_username,
    wrk_rps,
)
from tests.server.dpop_support import DPoPKey

# Each thread's requests come from its own table: tokens[i] and, for DPoP, proofs[i][n].
_REQUEST_LUA = """
local tables = {%s}
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
  table.insert(threads, thread)
end
function init(args)
  me = tables[index]
  n = 0
end
function request()
  n = n + 1
  local headers = {}
  if me.proofs then headers["DPoP"] = me.proofs[n] end
  if me.refresh then
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", nil, headers, '{"refresh_token":"' .. me.refresh .. '"}')
  end
  headers["Authorization"] = me.scheme .. " " .. me.token
  return wrk.format(nil, nil, headers)
end
function response(status, headers, body)
  if me.refresh then
    local next_token = string.match(body, '"refresh_token":%%s*"([^"]+)"')
    if next_token then me.refresh = next_token end
  end
end
"""


def _lua_table(entry: dict[str, Any]) -> str:
    parts = [f'scheme = "{entry["scheme"]}"', f'token = "{entry.get("token", "")}"']
    if entry.get("refresh"):
        parts.append(f'refresh = "{entry["refresh"]}"')
    if entry.get("proofs"):
        parts.append("proofs = {" + ",".join(f'"{p}"' for p in entry["proofs"]) + "}")
    return "{" + ", ".join(parts) + "}"


def _sign_in(base_url: str, key: DPoPKey | None) -> dict[str, Any]:
    username = unique_username("bench-dpop")
    with httpx.Client(base_url=base_url, timeout=30,
                      headers={"User-Agent": BENCH_USER_AGENT}) as http:
        http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
        headers = {"DPoP": key.proof("POST", base_url + "/v1/auth/login")} if key else {}
        r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                      headers=headers)
        r.raise_for_status()
        return r.json()


class Load:
    """One wrk run's worth of users: ``threads`` sessions, bound or not."""

    def __init__(self, base_url: str, *, threads: int, dpop: bool, refresh: bool,
                 pool: int, seconds: int) -> None:
        self.base_url, self.threads, self.dpop = base_url, threads, dpop
        self.refresh, self.pool, self.seconds = refresh, pool, seconds

    def run(self) -> float:
        path = "/v1/auth/refresh" if self.refresh else "/v1/me"
        entries = []
        for _ in range(self.threads):
            key = DPoPKey() if self.dpop else None
            tokens = _sign_in(self.base_url, key)
            entry: dict[str, Any] = {"scheme": "DPoP" if self.dpop else "Bearer",
                                     "token": tokens["access_token"]}
            if self.refresh:
                entry["refresh"] = tokens["refresh_token"]
            if key is not None:
                access = None if self.refresh else tokens["access_token"]
                entry["proofs"] = [key.proof("POST" if self.refresh else "GET",
                                             self.base_url + path, access_token=access,
                                             jti=uuid.uuid4().hex)
                                   for _ in range(self.pool)]
            entries.append(entry)
        lua = _REQUEST_LUA % ", ".join(_lua_table(e) for e in entries)
        return wrk_rps(self.base_url + path, seconds=self.seconds, connections=self.threads,
                       threads=self.threads, lua=lua)


def proof_cost_us(alg: str, batches: int = 15, per_batch: int = 200) -> float:
    """Return the median cost of verifying one proof in process, in microseconds."""
    from latchkey_resource.dpop import verify_proof

    key = DPoPKey(alg)
    url = "https://auth.example.com/v1/me"
    proofs = [key.proof("GET", url, access_token="token") for _ in range(per_batch)]
    costs = []
    for _ in range(batches):
        start = time.perf_counter()
        for proof in proofs:
            verify_proof([proof], method="GET", url=url, now=time.time(),
                         iat_window_seconds=60, access_token="token")
        costs.append((time.perf_counter() - start) / per_batch * 1e6)
    return statistics.median(costs)


def access_token_cost_us(batches: int = 15, per_batch: int = 200) -> float:
    """Return the median cost of one Ed25519 access-token signature check (uncached)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode({"sub": "x"}, private, algorithm="EdDSA")
    public = private.public_key()
    costs = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(per_batch):
            jwt.decode(token, public, algorithms=["EdDSA"])
        costs.append((time.perf_counter() - start) / per_batch * 1e6)
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4,
                        help="wrk threads = connections = sessions")
    parser.add_argument("--pool", type=int, default=0,
                        help="proofs made per thread per run, more than it can send "
                             "(default: 1000 per second of the run)")
    args = parser.parse_args()
    args.pool = args.pool or 1000 * args.seconds
    result: dict[str, Any] = {
        "setup": {"workers": args.workers, "wrk_threads_and_connections": args.threads,
                  "seconds": args.seconds, "repetitions": args.repetitions,
                  "python": sys.version.split()[0]},
        "verify_proof_us": {alg: round(proof_cost_us(alg), 1) for alg in ("ES256", "EdDSA")},
        "access_token_signature_us": round(access_token_cost_us(), 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_bench_redis(Path(tmp) / "redis", sock)
        server = start_server(Path(tmp) / "instance", {
            "LATCHKEY_WORKERS": str(args.workers), "LATCHKEY_LOG_LEVEL": "WARNING",
            "LATCHKEY_DPOP_JTI_LIMIT": "1000000"}, redis_url=f"unix://{sock}")
        try:
            def load(**kw: bool) -> Load:
                return Load(server.base_url, threads=args.threads, pool=args.pool,
                            seconds=args.seconds, **kw)

            me = interleave({"bearer_me_rps": load(dpop=False, refresh=False).run,
                             "dpop_me_rps": load(dpop=True, refresh=False).run},
                            args.repetitions)
            refresh = interleave({"refresh_rps": load(dpop=False, refresh=True).run,
                                  "dpop_refresh_rps": load(dpop=True, refresh=True).run},
                                 args.repetitions)
        finally:
            server.stop()
            redis_proc.stop()
    result["me"] = {**{k: round(v) for k, v in me.items()},
                    "ratio": round(me["dpop_me_rps"] / me["bearer_me_rps"], 2)}
    result["refresh"] = {**{k: round(v) for k, v in refresh.items()},
                         "ratio": round(refresh["dpop_refresh_rps"] / refresh["refresh_rps"], 2)}
    print_json(result)


if __name__ == "__main__":
    main()
