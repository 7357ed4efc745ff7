"""Exactly one embedded store process per instance directory, whatever starts the app, and it
stops with its last user (issue 13).

Started the ways users start a Flask app, not through ``latchkey-server``: a bare
``gunicorn -w 2 'latchkey_server:create_app()'`` (every worker builds the app, so every
worker asks for the store) and ``flask --app latchkey_server:create_app run`` stopped with
SIGINT, as Ctrl-C does. Real processes; the store processes are counted in ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST_ARGON2, VENV_BIN, ServerProcess, free_port, wait_until_ready
from tests.server.ops_support import processes_mentioning, sign_in, wait_for
from tests.server.test_embedded_durability import embedded_redis_pids


def _start(argv: list[str], instance: Path, port: int,
           started: list[subprocess.Popen[bytes]]) -> ServerProcess:
    """Start ``argv`` as the user would, with the store in ``instance``; stopped after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(FAST_ARGON2)
    env["LATCHKEY_INSTANCE_PATH"] = str(instance)
    instance.mkdir(parents=True, exist_ok=True)
    log_path = instance / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    started.append(proc)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path, instance, env)
    wait_until_ready(server)
    return server


def _bare_gunicorn(instance: Path, started: list[subprocess.Popen[bytes]]) -> ServerProcess:
    """Start ``gunicorn -w 2 'latchkey_server:create_app()'`` and wait for both workers."""
    port = free_port()
    server = _start([str(VENV_BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
                     "latchkey_server:create_app()"], instance, port, started)
    # Both workers build the app (gunicorn loads it in each worker at boot).
    assert wait_for(lambda: server.logs().count("Booting worker") == 2)
    return server


@pytest.fixture
def stop_after() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running afterwards are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bare_gunicorn_with_two_workers_runs_one_store_and_stops_it(tmp_path: Path,
                                                                    stop_after) -> None:
    instance = tmp_path / "gunicorn"
    server = _bare_gunicorn(instance, stop_after)
    for _ in range(6):
        _, tokens = sign_in(server)
        me = httpx.get(server.base_url + "/v1/me", timeout=10,
                       headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200, me.text
    assert len(embedded_redis_pids(instance)) == 1, "one store process per instance"

    server.proc.send_signal(signal.SIGTERM)  # what a process manager sends
    assert server.proc.wait(timeout=30) == 0
    assert wait_for(lambda: not embedded_redis_pids(instance), timeout_seconds=10), \
        "the store outlived gunicorn"


def test_a_restarted_worker_joins_the_store_instead_of_starting_another(tmp_path: Path,
                                                                        stop_after) -> None:
    instance = tmp_path / "restart"
    server = _bare_gunicorn(instance, stop_after)
    _, tokens = sign_in(server)
    (store,) = embedded_redis_pids(instance)
    # Kill one worker outright (no atexit), as gunicorn's timeout does: the other still uses
    # the store, so it keeps running, and the worker gunicorn boots instead joins it.
    workers = [int(pid) for pid in subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True,
        check=False).stdout.split()]
    os.kill(workers[0], signal.SIGKILL)
    assert wait_for(lambda: server.logs().count("Booting worker") >= 3)
    for _ in range(4):  # requests reach both workers, the new one included
        sign_in(server)
    assert embedded_redis_pids(instance) == [store]
    me = httpx.get(server.base_url + "/v1/me", timeout=10,
                   headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    assert wait_for(lambda: not embedded_redis_pids(instance), timeout_seconds=10)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM],
                         ids=["sigint", "sigterm"])
def test_flask_run_stopped_by_sigint_or_killed_by_sigterm_stops_its_store(
        tmp_path: Path, stop_after, stop_signal: signal.Signals) -> None:
    # SIGINT is Ctrl-C (exit handlers run); Python's default SIGTERM ends the process
    # without them, so nothing in it can stop the store: its keeper does, once no process
    # uses it.
    instance, port = tmp_path / "flask", free_port()
    server = _start([str(VENV_BIN / "flask"), "--app", "latchkey_server:create_app", "run",
                     "--port", str(port)], instance, port, stop_after)
    sign_in(server)
    assert len(embedded_redis_pids(instance)) == 1

    server.proc.send_signal(stop_signal)
    server.proc.wait(timeout=30)
    assert wait_for(lambda: not embedded_redis_pids(instance), timeout_seconds=10), \
        "the store outlived flask run"
    assert wait_for(lambda: not processes_mentioning(str(instance / "redis")),
                    timeout_seconds=10), "the keeper outlived it"
