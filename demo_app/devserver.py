"""Run a throwaway Latchkey server and the demo backend next to the demo on a desktop.

The server runs on the embedded default (no ``LATCHKEY_REDIS_URL``: it starts its own
Redis), on loopback, in the background. Next to it runs the demo backend: the Flask example
API (``examples/flask_api``) under gunicorn, checking sessions in the same embedded store,
as a backend team's service would. The app runs in front, told both URLs; closing the app
stops both. ``render_screenshots.py`` uses the same helpers.

    .venv/bin/python demo_app/devserver.py [--host 127.0.0.1] [--port 8000]
                                          [--backend-port 8001 | --no-backend]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from latchkey_server.processes import stop_process

__all__ = ["embedded_store_url", "running_backend", "running_server"]

HERE = Path(__file__).resolve().parent
#: The demo backend: the Flask example, as its README runs it.
BACKEND_APP_DIR = HERE.parent / "examples" / "flask_api"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, what: str) -> None:
    """Poll ``url`` until it answers 200; raise with the log if ``proc`` dies or 30 s pass."""
    import httpx

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n" + log_path.read_text())
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in 30 s")
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(host: str = "127.0.0.1", port: int = 8000,
                   settings: dict[str, str] | None = None, *,
                   instance: Path | None = None) -> Iterator[str]:
    """Start ``latchkey-server`` from this virtualenv; yield its base URL once ready.

    ``instance`` is the instance directory to use (kept afterwards); by default a
    temporary one, removed when the server stops.
    """
    own_instance = instance is None
    instance = instance or Path(tempfile.mkdtemp(prefix="latchkey-demo-server-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env["LATCHKEY_INSTANCE_PATH"] = str(instance)
    env.update(settings or {})
    exe = Path(sys.executable).parent / "latchkey-server"
    log_path = instance / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own server binary, fixed arguments
            [str(exe), "--host", host, "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}"
    try:
        _wait_ready(proc, url + "/readyz", log_path, "latchkey-server")
        yield url
    finally:
        stop_process(proc, timeout_seconds=20)
        if own_instance:
            shutil.rmtree(instance, ignore_errors=True)


def embedded_store_url(instance: Path) -> str:
    """Return the ``unix://`` URL of the embedded store a server on ``instance`` runs.

    The store listens only on a unix socket (mode 0700, this user's); its starter records
    the socket's path in ``<instance>/redis/socket.path`` (``latchkey_server.embedded``).
    """
    return "unix://" + (instance / "redis" / "socket.path").read_text().strip()


@contextlib.contextmanager
def running_backend(issuer: str, redis_url: str, host: str = "127.0.0.1", port: int = 8001,
                    *, log_path: Path | None = None) -> Iterator[str]:
    """Start the demo backend (the Flask example under gunicorn); yield its origin.

    It checks sessions in ``redis_url``, the store of the Latchkey server at ``issuer``,
    exactly as its README says a backend team runs it. Its access log (one line per
    request: method, path, status; never a header) goes to ``log_path``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(LATCHKEY_ISSUER=issuer, LATCHKEY_REDIS_URL=redis_url)
    exe = Path(sys.executable).parent / "gunicorn"
    own_log = log_path is None
    log_path = log_path or Path(tempfile.mkstemp(prefix="latchkey-demo-backend-",
                                                 suffix=".log")[1])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - the venv's gunicorn, fixed arguments
            [str(exe), "--bind", f"{host}:{port}", "--workers", "1",
             "--chdir", str(BACKEND_APP_DIR), "--access-logfile", "-",
             "--access-logformat", '%(m)s %(U)s %(s)s', "app:create_app()"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{host}:{port}"
    try:
        _wait_ready(proc, url + "/healthz", log_path, "the demo backend")
        yield url
    finally:
        stop_process(proc, timeout_seconds=20)
        if own_log:
            log_path.unlink(missing_ok=True)


def main() -> None:
    """Start the server, run the app against it, stop the server when the app closes."""
    parser = argparse.ArgumentParser(description="Run the Latchkey demo with its own server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend-port", type=int, default=8001)
    parser.add_argument("--no-backend", action="store_true",
                        help="run without the demo backend (its card is hidden)")
    args = parser.parse_args()
    instance = Path(tempfile.mkdtemp(prefix="latchkey-demo-server-"))
    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(running_server(args.host, args.port, instance=instance))
            env = dict(os.environ, LATCHKEY_DEMO_SERVER=url)
            print(f"latchkey-server is up at {url}")
            if not args.no_backend:
                backend = stack.enter_context(running_backend(
                    url, embedded_store_url(instance), args.host, args.backend_port))
                env["LATCHKEY_DEMO_BACKEND"] = backend
                print(f"the demo backend is up at {backend}")
            print("starting the demo app")
            subprocess.run([sys.executable, str(HERE / "main.py")], env=env,  # noqa: S603
                           check=False)
    finally:
        shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
