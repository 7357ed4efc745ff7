"""Every line the server writes is one JSON object, gunicorn's or granian's own included,
and none of them holds a token or a password (D1).

A real ``latchkey-server`` under gunicorn (two workers, gunicorn's access log on, every
logger at DEBUG) serves a whole sign-in, refresh, leak and error run; then a worker is
killed so gunicorn's master logs an error of its own, and the server is stopped to flush
everything. Its stdout and stderr (one file) are parsed line by line.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import PASSWORD
from tests.server.ops_support import processes_mentioning, sign_in, wait_for


def _workers_of(master_pid: int) -> list[int]:
    workers = []
    for pid in processes_mentioning("latchkey-server"):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if f"\nPPid:\t{master_pid}\n" in status:
            workers.append(pid)
    return workers


@pytest.mark.parametrize("embedded", [False, True], ids=["redis-url", "embedded-store"])
def test_every_line_on_stdout_and_stderr_is_json_without_secrets(
        server_factory, embedded: bool, wsgi_server: str) -> None:
    server = server_factory(embedded=embedded, workers=2, gunicorn_access_log="1",
                            server=wsgi_server)
    username, tokens = sign_in(server)
    with server.client() as http:
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert http.get("/v1/me", headers=bearer).status_code == 200
        r = http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 200
        fresh = r.json()
        http.get("/healthz", params={"access_token": fresh["access_token"]})  # leaked
        http.get("/no/such/path", headers={"X-Request-ID": "bad id, with spaces"})
        http.post("/v1/auth/login", content=b"{not json", headers={
            "Content-Type": "application/json"})
    workers = _workers_of(server.proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)  # the parent logs this as an error
    assert wait_for(lambda: len([p for p in _workers_of(server.proc.pid)
                                 if p != workers[0]]) == 2)
    server.stop()

    lines = [line for line in server.logs().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "msg"} <= r.keys()
               for r in records)
    loggers = {r["logger"] for r in records}
    assert {"latchkey.access", "latchkey.security"} <= loggers, loggers
    if wsgi_server == "gunicorn":
        assert {"gunicorn.access", "gunicorn.error"} <= loggers, loggers
        killed = [r for r in records if r["logger"] == "gunicorn.error"
                  and str(workers[0]) in r["msg"]]
    else:  # granian's access log is off (the app's is the one); its own lines are JSON
        assert "granian.access" not in loggers
        killed = [r for r in records if r["logger"] == "_granian"
                  and "Unexpected exit" in r["msg"]]
    assert killed and killed[0]["level"] == "error"
    # Every request line, the app's and gunicorn's, carries the request id the client saw.
    for record in records:
        if record["logger"] in ("gunicorn.access", "latchkey.access"):
            assert len(record["request_id"]) >= 1
    text = "\n".join(lines)
    for secret in (tokens["access_token"], tokens["refresh_token"], fresh["access_token"],
                   fresh["refresh_token"], PASSWORD):
        assert secret not in text
    assert username not in text
