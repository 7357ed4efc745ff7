"""Run the real demo app through one scripted scenario; exit 0 if every check held.

Started by ``tests/demo/conftest.py::run_demo`` as ``python driver.py`` with a JSON spec
in ``LATCHKEY_DEMO_TEST_SPEC``: the scenario name, its parameters, where to write the app's
DEBUG log and the result (observations for the test, plus every token and session id the
server issued to the app, so the test can prove none of them reached the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "demo_app"))

SPEC: dict[str, Any] = json.loads(os.environ["LATCHKEY_DEMO_TEST_SPEC"])
PARAMS: dict[str, Any] = SPEC["params"]
SECRETS: list[str] = []
OBSERVED: dict[str, Any] = {}

# Everything the app and its libraries log, at DEBUG, goes to one file (KIVY_LOG_MODE=PYTHON
# routes Kivy's logger through the standard logging module too).
_handler = logging.FileHandler(SPEC["log_path"], encoding="utf-8")
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
logging.getLogger().addHandler(_handler)
logging.getLogger().setLevel(logging.DEBUG)


def _record_secrets() -> None:
    """Note every token and session id the server hands the app (for the leak check)."""
    from latchkey_client import _core

    original = _core.SessionCore.accept

    def accept(self: Any, doc: dict[str, Any], **kwargs: Any) -> Any:
        for key in ("access_token", "refresh_token", "session_id"):
            if isinstance(doc.get(key), str):
                SECRETS.append(doc[key])
        return original(self, doc, **kwargs)

    _core.SessionCore.accept = accept  # type: ignore[method-assign]


_record_secrets()

from kivy.config import Config  # noqa: E402 - logging must be set up before Kivy starts

Config.set("graphics", "width", "390")
Config.set("graphics", "height", "820")

from latchkey_demo.app import LatchkeyDemoApp  # noqa: E402
from latchkey_demo.platform_setup import boot_clock  # noqa: E402
from latchkey_demo.scripting import (  # noqa: E402
    ScriptFailed,
    find,
    run_scripted,
    settle,
    tap,
    type_into,
    wait_until,
)

Scenario = Callable[[LatchkeyDemoApp], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    """Register a scenario under its function name."""
    SCENARIOS[fn.__name__] = fn
    return fn


def check(condition: object, message: str) -> None:
    """Fail the scenario with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ScriptFailed(message)


# -- steps shared by scenarios -----------------------------------------------------------

async def sign_in(app: LatchkeyDemoApp, *, stay: bool = False,
                  password: str | None = None) -> None:
    """Type the credentials, tap "Sign in", wait for Home with the profile loaded."""
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    type_into(find(app, "signin", "username"), PARAMS["username"])
    type_into(find(app, "signin", "password"), password or PARAMS["password"])
    find(app, "signin", "stay").active = stay
    tap(find(app, "signin", "signin_button"))
    await wait_until(lambda: app.screen == "home" and find(app, "home").username and not app.busy,
                     what="Home with the profile")


def other_device() -> tuple[httpx.Client, dict[str, Any]]:
    """Sign the same user in from "another device" (plain HTTP, as a second phone would)."""
    http = httpx.Client(base_url=PARAMS["server_url"], timeout=15)
    r = http.post("/v1/auth/login", json={"username": PARAMS["username"],
                                          "password": PARAMS["password"],
                                          "device_name": "Other device"})
    r.raise_for_status()
    body = r.json()
    SECRETS.extend([body["access_token"], body["refresh_token"], body["session_id"]])
    http.headers["Authorization"] = f"Bearer {body['access_token']}"
    return http, body


def notice(app: LatchkeyDemoApp) -> str:
    """Return the message line the user currently sees."""
    return str(app.notice)


# -- scenarios ----------------------------------------------------------------------------

@scenario
async def sign_in_profile_and_sessions(app: LatchkeyDemoApp) -> None:
    """Sign in, read the profile, list sessions, sign out the test's second session."""
    await sign_in(app)
    OBSERVED["username"] = find(app, "home").username
    OBSERVED["auth_level_row"] = find(app, "home", "level_row").value
    OBSERVED["device_key_row"] = find(app, "home", "key_row").value
    OBSERVED["device_name"] = app.device_name
    home = find(app, "home")
    await wait_until(lambda: home.idle_text not in ("", "—"), what="the idle countdown")
    OBSERVED["idle_text"] = home.idle_text
    OBSERVED["fingerprint"] = app.session_fingerprint
    # A logout button on every signed-in screen.
    for name in ("home", "sessions", "sensitive", "password"):
        app.go(name)
        await settle(0.2)
        button = find(app, name, "appbar").ids.logout_button
        check(button.text == "Sign out" and button.opacity == 1 and not button.disabled,
              f"no usable logout button on {name}")
    app.go("sessions")
    devices = find(app, "sessions")
    await wait_until(lambda: devices.loaded and len(devices.sessions) == 2 and not app.busy,
                     what="two sessions listed")
    cards = list(reversed(find(app, "sessions", "session_list").children))
    OBSERVED["devices"] = [c.device for c in cards]
    OBSERVED["agents"] = [c.agent for c in cards]
    OBSERVED["seen"] = [c.seen for c in cards]
    OBSERVED["this_device_markers"] = [c.ids.this_device.opacity == 1 for c in cards]
    other = next(c for c in cards if not c.current)
    tap(other.ids.revoke_button)
    await wait_until(lambda: len(devices.sessions) == 1 and not app.busy,
                     what="the list without the signed-out device")
    OBSERVED["after_revoke"] = [row["device"] for row in devices.sessions]
    OBSERVED["notice_after_revoke"] = notice(app)
    tap(find(app, "sessions", "appbar").ids.logout_button)
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen after logout")
    OBSERVED["notice_after_logout"] = notice(app)
    await wait_until(lambda: not app.client.is_signed_in, what="local tokens wiped")


@scenario
async def sign_out_others_and_everywhere(app: LatchkeyDemoApp) -> None:
    """Sign out all other devices, then everywhere."""
    await sign_in(app)
    app.go("sessions")
    devices = find(app, "sessions")
    await wait_until(lambda: len(devices.sessions) == 3 and not app.busy, what="three sessions")
    tap(find(app, "sessions", "logout_others_button"))
    await wait_until(lambda: len(devices.sessions) == 1 and not app.busy, what="only this device")
    OBSERVED["after_others"] = [row["current"] for row in devices.sessions]
    tap(find(app, "sessions", "logout_all_button"))
    await wait_until(lambda: app.screen == "signin", what="signed out everywhere")
    OBSERVED["notice"] = notice(app)


@scenario
async def step_up_and_sensitive_action(app: LatchkeyDemoApp) -> None:
    """The sensitive action asks for the password, refuses a wrong one, then succeeds."""
    await sign_in(app)
    app.go("sensitive")
    before = app.session_fingerprint
    tap(find(app, "sensitive", "sensitive_button"))
    sensitive = find(app, "sensitive")
    await wait_until(lambda: sensitive.step_up_prompt and not app.busy, what="the step-up prompt")
    OBSERVED["prompt_shown"] = find(app, "sensitive", "step_up_card").opacity == 1
    type_into(find(app, "sensitive", "step_password"), "not the password at all")
    tap(find(app, "sensitive", "confirm_button"))
    await wait_until(lambda: app.notice_kind == "error" and not app.busy,
                     what="the wrong-password message")
    OBSERVED["wrong_password_notice"] = notice(app)
    OBSERVED["still_signed_in"] = app.screen == "sensitive" and app.client.is_signed_in
    type_into(find(app, "sensitive", "step_password"), PARAMS["password"])
    tap(find(app, "sensitive", "confirm_button"))
    await wait_until(lambda: sensitive.done and not app.busy, what="the action's success")
    OBSERVED["before"] = before
    OBSERVED["shown_before"] = sensitive.before
    OBSERVED["shown_after"] = find(app, "sensitive", "session_after").value
    OBSERVED["auth_level"] = app.auth_level
    OBSERVED["notice"] = notice(app)


@scenario
async def idle_warning_then_logout(app: LatchkeyDemoApp) -> None:
    """The idle warning counts down; "Stay signed in" keeps the session; then it runs out."""
    await sign_in(app)
    started = time.monotonic()
    await wait_until(lambda: app.idle_warning is not None, timeout_seconds=20,
                     what="the idle warning")
    OBSERVED["warned_after_seconds"] = round(time.monotonic() - started, 1)
    popup = app.idle_warning
    first = popup.ids.countdown.text
    await asyncio.sleep(1.2)
    OBSERVED["countdown"] = [first, popup.ids.countdown.text]
    tap(popup.ids.stay_button)
    await settle(0.3)
    OBSERVED["open_after_stay"] = app.idle_warning is not None
    OBSERVED["screen_after_stay"] = app.screen
    # Now leave the app alone: warning again, then the automatic sign-out.
    await wait_until(lambda: app.idle_warning is not None, timeout_seconds=20,
                     what="the second idle warning")
    await wait_until(lambda: app.screen == "signin", timeout_seconds=20,
                     what="the automatic sign-out")
    OBSERVED["popup_closed"] = app.idle_warning is None
    OBSERVED["notice"] = notice(app)
    OBSERVED["reason"] = find(app, "signin").signed_out_reason
    await wait_until(lambda: not app.client.is_signed_in, what="local tokens wiped")


@scenario
async def pause_and_resume(app: LatchkeyDemoApp) -> None:
    """A short pause keeps the session; a pause longer than the idle limit signs out."""
    offset = [0.0]
    app.clock = lambda: boot_clock() + offset[0]
    await sign_in(app)
    limit = find(app, "home").idle_total_seconds
    OBSERVED["idle_limit"] = limit
    check(app.on_pause() is True, "on_pause must keep the app alive")
    offset[0] += 2
    app.on_resume()
    await settle(1.0)
    OBSERVED["after_short_pause"] = app.screen
    app.on_pause()
    offset[0] += limit + 5  # the phone slept longer than the idle limit
    app.on_resume()
    await wait_until(lambda: app.screen == "signin", what="sign-in after a long pause")
    OBSERVED["notice"] = notice(app)
    OBSERVED["reason"] = find(app, "signin").signed_out_reason
    await wait_until(lambda: not app.client.is_signed_in, what="local tokens wiped")
    await asyncio.sleep(0.5)  # let the server logout go out


@scenario
async def ended_elsewhere(app: LatchkeyDemoApp) -> None:
    """Another device ends this session (``how``); the app says why within seconds."""
    await sign_in(app)
    http, _body = other_device()
    how = PARAMS["how"]
    if how == "remote":
        sessions = http.get("/v1/auth/sessions").json()["sessions"]
        mine = [s for s in sessions if not s["current"]]
        check(len(mine) == 1, "expected exactly the app's session besides the other device")
        http.delete(f"/v1/auth/sessions/{mine[0]['session_id']}").raise_for_status()
    elif how == "password":
        r = http.post("/v1/auth/password", json={"current_password": PARAMS["password"],
                                                 "new_password": PARAMS["new_password"]})
        r.raise_for_status()
        SECRETS.extend([r.json()["access_token"], r.json()["refresh_token"]])
    http.close()
    await wait_until(lambda: app.screen == "signin", timeout_seconds=15,
                     what="the app to notice it was signed out")
    OBSERVED["notice"] = notice(app)
    OBSERVED["reason"] = find(app, "signin").signed_out_reason


@scenario
async def demo_backend(app: LatchkeyDemoApp) -> None:
    """Call the demo backend (api_origins), get signed out elsewhere, call it again."""
    await sign_in(app)
    home = find(app, "home")
    OBSERVED["card_shown"] = find(app, "home", "backend_card").shown
    tap(find(app, "home", "backend_button"))
    await wait_until(lambda: home.backend_answer and not app.busy, what="the backend's answer")
    OBSERVED["answer"] = find(app, "home", "backend_answer").text
    http, _body = other_device()
    sessions = http.get("/v1/auth/sessions").json()["sessions"]
    mine = [s for s in sessions if not s["current"]]
    check(len(mine) == 1, "expected exactly the app's session besides the other device")
    http.delete(f"/v1/auth/sessions/{mine[0]['session_id']}").raise_for_status()
    http.close()
    tap(find(app, "home", "backend_button"))
    await wait_until(lambda: app.screen == "signin", timeout_seconds=15,
                     what="the app to show the backend's refusal")
    OBSERVED["notice"] = notice(app)
    OBSERVED["reason"] = find(app, "signin").signed_out_reason


@scenario
async def change_password(app: LatchkeyDemoApp) -> None:
    """Change the password in the app: the other device is signed out, the id changes."""
    await sign_in(app)
    app.go("password")
    await settle(0.2)
    before = app.session_fingerprint
    type_into(find(app, "password", "current"), PARAMS["password"])
    type_into(find(app, "password", "new"), PARAMS["new_password"])
    type_into(find(app, "password", "confirm"), PARAMS["new_password"])
    tap(find(app, "password", "change_button"))
    password = find(app, "password")
    await wait_until(lambda: password.done and not app.busy, what="the password change")
    OBSERVED["signed_out_text"] = find(app, "password", "signed_out_label").text
    OBSERVED["count"] = password.signed_out_count
    OBSERVED["changed"] = before != app.session_fingerprint
    OBSERVED["still_signed_in"] = app.client.is_signed_in


@scenario
async def wrong_password_message(app: LatchkeyDemoApp) -> None:
    """Tap "Sign in" with a wrong password; record what the user is told."""
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    type_into(find(app, "signin", "username"), PARAMS["username"])
    type_into(find(app, "signin", "password"), "definitely not the password")
    tap(find(app, "signin", "signin_button"))
    await wait_until(lambda: app.notice_kind == "error" and not app.busy,
                     what="an error message")
    OBSERVED["notice"] = notice(app)
    OBSERVED["screen"] = app.screen
    await sign_in(app)  # and the right one still works afterwards
    OBSERVED["then_signed_in"] = app.screen == "home"


@scenario
async def unreachable_server(app: LatchkeyDemoApp) -> None:
    """With the server down, signing in says so and the UI keeps answering."""
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    type_into(find(app, "signin", "username"), "someone")
    type_into(find(app, "signin", "password"), "whatever password")
    started = time.monotonic()
    tap(find(app, "signin", "signin_button"))
    OBSERVED["tap_returned_in_seconds"] = round(time.monotonic() - started, 3)
    OBSERVED["busy_while_waiting"] = app.busy
    await wait_until(lambda: app.notice_kind == "error" and not app.busy, timeout_seconds=40,
                     what="the network error message")
    OBSERVED["notice"] = notice(app)


@scenario
async def register_and_sign_in(app: LatchkeyDemoApp) -> None:
    """Create an account from the app; it signs straight in."""
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    tap(find(app, "signin", "register_link"))
    await wait_until(lambda: app.screen == "register", what="the registration screen")
    type_into(find(app, "register", "username"), PARAMS["username"])
    type_into(find(app, "register", "password"), "short")
    type_into(find(app, "register", "confirm"), "short")
    tap(find(app, "register", "register_button"))
    await wait_until(lambda: app.notice_kind == "error" and not app.busy, what="weak password")
    OBSERVED["weak_notice"] = notice(app)
    type_into(find(app, "register", "password"), PARAMS["password"])
    type_into(find(app, "register", "confirm"), PARAMS["password"])
    tap(find(app, "register", "register_button"))
    await wait_until(lambda: app.screen == "home" and find(app, "home").username and not app.busy,
                     what="Home after registering")
    OBSERVED["username"] = find(app, "home").username


@scenario
async def stay_signed_in(app: LatchkeyDemoApp) -> None:
    """Sign in with the switch set to ``stay``; report whether storage holds a token."""
    OBSERVED["switch_enabled"] = not find(app, "signin", "stay").disabled
    await sign_in(app, stay=PARAMS["stay"])
    OBSERVED["stored"] = app.storage.load("refresh_token") is not None


@scenario
async def restored(app: LatchkeyDemoApp) -> None:
    """Start with a stored session: Home appears without typing; then sign out."""
    await wait_until(lambda: app.screen == "home" and find(app, "home").username and not app.busy,
                     what="the restored session")
    OBSERVED["username"] = find(app, "home").username
    tap(find(app, "home", "appbar").ids.logout_button)
    await wait_until(lambda: app.screen == "signin", what="signed out")
    await wait_until(lambda: app.storage.load("refresh_token") is None,
                     what="the stored token removed")
    await asyncio.sleep(0.5)


@scenario
async def expect_signin(app: LatchkeyDemoApp) -> None:
    """Start and land on sign-in (nothing stored)."""
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    await settle(0.5)
    OBSERVED["screen"] = app.screen


@scenario
async def phone_tour(app: LatchkeyDemoApp) -> None:
    """At phone size: pause, locked storage, offline, a restored backup, a long pause.

    The network is dropped by the proxy ``main`` put in front of the server; each step's
    screen is saved (and its size checked by the test).
    """
    from kivy.core.window import Window
    from latchkey_demo.phone_tour import PHONE_SIZE
    from latchkey_demo.phone_tour import phone_tour as tour

    Window.size = PHONE_SIZE
    shots = Path(PARAMS["shots_dir"])
    shots.mkdir(parents=True, exist_ok=True)

    async def shoot(name: str) -> None:
        await settle(0.4)
        saved = Window.screenshot(name=str(shots / f"{name}.png"))
        Path(saved).rename(shots / f"{name}.png")

    OBSERVED.update(await tour(app, username=PARAMS["username"], password=PARAMS["password"],
                               go_offline=PROXY[0].go_offline, go_online=PROXY[0].go_online,
                               shoot=shoot))


#: The proxy in front of the server, for scenarios that drop the network (``proxy`` param).
PROXY: list[Any] = []


def main() -> int:
    """Run the scenario named in the spec; write the result; return the exit status."""
    script = SCENARIOS[SPEC["scenario"]]
    status = 0
    if PARAMS.get("proxy"):
        sys.path.insert(0, str(ROOT))
        from tests.netproxy import LoopbackProxy

        proxy = LoopbackProxy(PARAMS["server_url"], record=False)
        # On the port the server calls its public URL (LATCHKEY_ISSUER), if the test set
        # one: a DPoP proof's htu names the URL the app called.
        proxy.port = int(PARAMS.get("proxy_port") or 0)
        PROXY.append(proxy.start())
        os.environ["LATCHKEY_DEMO_SERVER"] = PROXY[0].base_url
    try:
        run_scripted(LatchkeyDemoApp(), script)
    except ScriptFailed as exc:
        print(f"SCENARIO FAILED: {exc}", file=sys.stderr)
        status = 1
    finally:
        Path(SPEC["result_path"]).write_text(json.dumps({"observed": OBSERVED,
                                                         "secrets": SECRETS}))
    return status


if __name__ == "__main__":
    sys.exit(main())
