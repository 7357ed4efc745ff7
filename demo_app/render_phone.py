"""Render the phone tour to ``docs/screenshots/phone-*.png`` at 1080 x 2340, density 2.75.

Starts its own ``latchkey-server`` on loopback with the embedded Redis (or uses
``--server URL``) and a loopback proxy in front of it (``tests/netproxy.py``) so the tour
can drop the network; the app keeps its session in its real encrypted file, which the
tour locks, unlocks and "restores onto a new phone" (``latchkey_demo/phone_tour.py``).

    .venv/bin/python demo_app/render_phone.py            # SDL offscreen, no display
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway demo account


def main() -> None:
    """Render the phone screenshots."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    from devserver import running_server
    from render_screenshots import _free_port, _seed, prepare_environment

    from tests.netproxy import LoopbackProxy

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="use this server instead of starting one")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from latchkey_demo.phone_tour import PHONE_DENSITY, PHONE_SIZE

    os.environ["KIVY_METRICS_DENSITY"] = str(PHONE_DENSITY)
    kivy_home = prepare_environment(check_seconds=0)
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        # The proxy (to drop the network) is what the app calls, so its URL is the server's
        # public one: the app's DPoP proofs name it (htu), as they name a load balancer's.
        proxy_port = _free_port()
        url = args.server or stack.enter_context(running_server(
            port=_free_port(), settings={"LATCHKEY_ISSUER": f"http://127.0.0.1:{proxy_port}"}))
        username = f"ada.lovelace.{uuid.uuid4().hex[:4]}"
        _seed(url, username)
        proxy = LoopbackProxy(url, record=False)
        proxy.port = proxy_port
        proxy.start()
        stack.callback(proxy.stop)
        os.environ["LATCHKEY_DEMO_SERVER"] = proxy.base_url
        _render(username, proxy, PHONE_SIZE, args.out)
    shutil.rmtree(kivy_home, ignore_errors=True)


def _render(username: str, proxy: Any, size: tuple[int, int], out: Path) -> None:
    from kivy.config import Config

    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    from kivy.core.window import Window
    from latchkey_demo.app import LatchkeyDemoApp
    from latchkey_demo.phone_tour import phone_tour
    from latchkey_demo.scripting import run_scripted
    from render_screenshots import screenshooter

    Window.size = size
    shoot, shots = screenshooter(out)

    async def script(app: LatchkeyDemoApp) -> None:
        await phone_tour(app, username=username, password=PASSWORD,
                         go_offline=proxy.go_offline, go_online=proxy.go_online,
                         shoot=shoot)

    run_scripted(LatchkeyDemoApp(), script)
    shutil.rmtree(shots, ignore_errors=True)


if __name__ == "__main__":
    main()
