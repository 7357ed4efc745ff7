"""Run a throwaway Latchkey server next to the demo on a desktop (``make demo``).

The server runs on the embedded default (no ``LATCHKEY_REDIS_URL``: it starts its own
Redis), on loopback, in the background; the app runs in front; closing the app stops the
server. ``render_screenshots.py`` uses the same helper.

    .venv/bin/python demo_app/devserver.py [--host 127.0.0.1] [--port 8000]
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

__all__ = ["running_server"]

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def running_server(host: str = "127.0.0.1", port: int = 8000,
                   settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``latchkey-server`` from this virtualenv; yield its base URL once ready."""
    import httpx

    instance = Path(tempfile.mkdtemp(prefix="latchkey-demo-server-"))
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
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("latchkey-server exited:\n" + log_path.read_text())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("latchkey-server did not become ready in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc, timeout_seconds=20)
        shutil.rmtree(instance, ignore_errors=True)


def main() -> None:
    """Start the server, run the app against it, stop the server when the app closes."""
    parser = argparse.ArgumentParser(description="Run the Latchkey demo with its own server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with running_server(args.host, args.port) as url:
        print(f"latchkey-server is up at {url}; starting the demo app")
        env = dict(os.environ, LATCHKEY_DEMO_SERVER=url)
        subprocess.run([sys.executable, str(HERE / "main.py")], env=env, check=False)  # noqa: S603


if __name__ == "__main__":
    main()
