"""Render every screen of the demo to PNG in ``docs/screenshots/`` (headless is fine).

Starts its own ``latchkey-server`` on loopback with the embedded Redis (or uses
``--server URL``), creates a demo account with two other "devices", then walks the real
app through sign-in, home, devices, the step-up prompt, the sensitive action, the password
change, the idle warning and a remote sign-out, saving the window after each step.

    .venv/bin/python demo_app/render_screenshots.py            # SDL offscreen, no display
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway demo account
NEW_PASSWORD = "violet staple orbit lantern"  # noqa: S105 - a throwaway demo account


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(url: str, username: str) -> None:
    """Create the demo account and sign it in on two other devices."""
    import httpx

    with httpx.Client(base_url=url, timeout=15) as http:
        http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
        for name, agent in (("Pixel 8", "LatchkeyDemo/0.1 (android; Linux 14) Kivy"),
                            ("iPad Air", "LatchkeyDemo/0.1 (ios; Darwin 23.4) Kivy")):
            r = http.post("/v1/auth/login", headers={"User-Agent": agent},
                          json={"username": username, "password": PASSWORD,
                                "device_name": name, "device_id": uuid.uuid4().hex})
            r.raise_for_status()


def _remote_sign_out(url: str, username: str, password: str) -> None:
    """From "another device", sign out every other session (the app's included)."""
    import httpx

    with httpx.Client(base_url=url, timeout=15) as http:
        r = http.post("/v1/auth/login", json={"username": username, "password": password,
                                              "device_name": "Work laptop"})
        r.raise_for_status()
        access = r.json()["access_token"]
        http.post("/v1/auth/logout-all", json={"scope": "others"},
                  headers={"Authorization": f"Bearer {access}"}).raise_for_status()


def prepare_environment(*, check_seconds: float) -> Path:
    """Set the Kivy and demo variables of a headless render; return the Kivy home to remove.

    An encrypted file stands in for the phone's Keystore/Keychain, so "Stay signed in" is
    on offer as it is on a phone.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    kivy_home = Path(tempfile.mkdtemp(prefix="latchkey-kivy-"))
    os.environ.setdefault("KIVY_HOME", str(kivy_home))
    (kivy_home / "config").mkdir()
    os.environ.setdefault("XDG_CONFIG_HOME", str(kivy_home / "config"))
    os.environ["LATCHKEY_DEMO_STORAGE"] = "file"
    os.environ["LATCHKEY_DEMO_FILE_PASSPHRASE"] = uuid.uuid4().hex
    os.environ["LATCHKEY_DEMO_DEVICE_NAME"] = "Ada's phone"
    os.environ["LATCHKEY_DEMO_CHECK_SECONDS"] = str(check_seconds)
    return kivy_home


def screenshooter(out: Path) -> tuple[Callable[[str], Awaitable[None]], Path]:
    """Return ``shoot(name)``, which saves the window as ``out/<name>.png``, and its scratch
    directory (Kivy numbers the files it writes; the move gives them their names)."""
    from kivy.core.window import Window
    from latchkey_demo.scripting import settle

    shots = Path(tempfile.mkdtemp(prefix="latchkey-shots-png-"))

    async def shoot(name: str) -> None:
        await settle(0.6)
        saved = Window.screenshot(name=str(shots / f"{name}.png"))
        shutil.move(saved, out / f"{name}.png")
        print(f"wrote {out / (name + '.png')}")

    return shoot, shots


def main() -> None:
    """Render the screenshots."""
    sys.path.insert(0, str(HERE))
    from devserver import running_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="use this server instead of starting one")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    os.environ.setdefault("KIVY_METRICS_DENSITY", "2")
    kivy_home = prepare_environment(check_seconds=1)
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        url = args.server or stack.enter_context(running_server(port=_free_port()))
        os.environ["LATCHKEY_DEMO_SERVER"] = url
        # A fresh server has no users yet; a shared one gets a unique name.
        username = f"ada.lovelace.{uuid.uuid4().hex[:4]}" if args.server else "ada.lovelace"
        _seed(url, username)
        _render(url, username, args.out)
    shutil.rmtree(kivy_home, ignore_errors=True)


def _render(url: str, username: str, out: Path) -> None:
    from kivy.config import Config

    density = float(os.environ["KIVY_METRICS_DENSITY"])
    width, height = int(390 * density), int(820 * density)  # a phone's 390 x 820 dp
    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    from kivy.core.window import Window
    from latchkey_demo.app import LatchkeyDemoApp
    from latchkey_demo.scripting import find, run_scripted, tap, type_into, wait_until

    Window.size = (width, height)
    shoot, shots = screenshooter(out)

    async def script(app: LatchkeyDemoApp) -> None:
        await wait_until(lambda: app.screen == "signin")
        type_into(find(app, "signin", "username"), username)
        type_into(find(app, "signin", "password"), PASSWORD)
        find(app, "signin", "stay").active = True
        await shoot("01-sign-in")
        tap(find(app, "signin", "register_link"))
        await shoot("02-register")
        app.go("signin")
        type_into(find(app, "signin", "username"), username)
        type_into(find(app, "signin", "password"), PASSWORD)
        tap(find(app, "signin", "signin_button"))
        home = find(app, "home")
        await wait_until(lambda: app.screen == "home" and home.username and not app.busy)
        app.dismiss_notice()
        await shoot("03-home")
        app.go("sessions")
        await wait_until(lambda: len(find(app, "sessions").sessions) == 3 and not app.busy)
        await shoot("04-devices")
        app.go("sensitive")
        tap(find(app, "sensitive", "sensitive_button"))
        await wait_until(lambda: find(app, "sensitive").step_up_prompt)
        await shoot("05-step-up")
        type_into(find(app, "sensitive", "step_password"), PASSWORD)
        tap(find(app, "sensitive", "confirm_button"))
        await wait_until(lambda: find(app, "sensitive").done)
        await shoot("06-sensitive-done")
        app.go("password")
        type_into(find(app, "password", "current"), PASSWORD)
        type_into(find(app, "password", "new"), NEW_PASSWORD)
        type_into(find(app, "password", "confirm"), NEW_PASSWORD)
        tap(find(app, "password", "change_button"))
        await wait_until(lambda: find(app, "password").done)
        await shoot("07-password-changed")
        app.go("home")
        await wait_until(lambda: not app.busy)
        # Travel 29 minutes ahead on the SDK's idle timer (private state, for the picture
        # only) so the real warning fires now, through the real event path.
        timer = app.client._idle
        with timer._cond:
            timer._schedule.last_activity_at -= 1800 - 53
            timer._cond.notify()
        await wait_until(lambda: app.idle_warning is not None)
        await shoot("08-idle-warning")
        app.stay_signed_in()
        _remote_sign_out(url, username, NEW_PASSWORD)
        await wait_until(lambda: app.screen == "signin", timeout_seconds=20)
        await shoot("09-signed-out-remotely")

    run_scripted(LatchkeyDemoApp(), script)
    shutil.rmtree(shots, ignore_errors=True)


if __name__ == "__main__":
    main()
