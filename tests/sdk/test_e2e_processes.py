"""One refresh per expiry for an app and its sibling processes sharing one store (S3, L3).

Real processes (``process_worker.py``) share an ``EncryptedFileStorage`` with
``share_access_token=True``; the refreshes are counted on the server, from its own
structured log (``session_refreshed``), and no reuse detection may fire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from latchkey_client import EncryptedFileStorage

from tests.conftest import ServerProcess

from .conftest import PASSWORD, Sdk, make_user


def started_workers(base_url: str, store: Path, key: bytes, tmp_path: Path, go: Path,
                    count: int) -> list[subprocess.Popen[str]]:
    worker = Path(__file__).with_name("process_worker.py")
    procs, readies = [], []
    for i in range(count):
        ready = tmp_path / f"ready-{i}"
        readies.append(ready)
        procs.append(subprocess.Popen(
            [sys.executable, str(worker), base_url, str(store), key.hex(), str(ready),
             str(go), "share"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).parents[2],
        ))
    deadline = time.monotonic() + 30
    while not all(r.exists() for r in readies):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    return procs


def test_sibling_processes_sharing_a_store_refresh_once_per_expiry_for_all(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, sdk: Sdk
) -> None:
    # 12 s access tokens, due at half their life: one expiry spans the whole run even on a
    # loaded machine, so exactly one refresh is right.
    server = server_factory(access_token_ttl=12, refresh_reuse_grace=1)
    key = os.urandom(32)
    store = tmp_path / "shared-tokens.bin"
    app = sdk(server, storage=EncryptedFileStorage(store, key=key), stay_signed_in=True,
              share_access_token=True)
    app.login(username=make_user(server), password=PASSWORD)
    go = tmp_path / "go"
    procs = started_workers(server.base_url, store, key, tmp_path, go, 4)
    time.sleep(6.1)  # the app's access token is now due (half its life), and the siblings'
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["ok"] for r in reports] == [3, 3, 3, 3], reports
    # The app itself, due too, adopts what its siblings stored instead of refreshing.
    assert app.get("/v1/me").status_code == 200
    logs = server.logs()
    assert logs.count('"event": "session_refreshed"') == 1, "one refresh for five processes"
    assert sum(r["refreshes"] for r in reports) + app.auth.refresh_requests == 1
    assert "refresh_token_reused" not in logs
    assert app.logout().server_confirmed
