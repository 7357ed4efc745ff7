"""Run a backend service the way its team would (gunicorn, uvicorn) beside a test deployment,
and check R1's promise against it over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import httpx
from latchkey_server.processes import stop_process

from tests.resource.conftest import Deployment, app_headers, bearer_to

__all__ = ["promise_holds", "served"]


@contextlib.contextmanager
def served(command: list[str], deployment: Deployment, port: int) -> Iterator[str]:
    """Run a backend server as a subprocess with the deployment's issuer and Redis URL."""
    env = {**os.environ, "LATCHKEY_ISSUER": deployment.issuer,
           "LATCHKEY_REDIS_URL": deployment.redis.url}
    log = deployment.server.instance_path / f"backend-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/orders", timeout=1)
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base
    finally:
        stop_process(proc, timeout_seconds=10)


def promise_holds(deployment: Deployment, base: str) -> None:
    """Served while live; refused with the reason on the very next request after logout."""
    tokens = deployment.sign_in()
    r = httpx.get(base + "/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json()["username"] == tokens["username"]
    assert bearer_to(deployment.server, "POST", "/v1/auth/logout-all",
                     tokens["access_token"]).status_code == 204
    r = httpx.get(base + "/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (r.json()["code"], r.json()["reason"]) == ("session_revoked", "logout")
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = httpx.get(base + "/orders")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
