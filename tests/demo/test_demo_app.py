"""The demo app, driven headless against a real server and Redis, does what users see.

Each test runs one scripted session of the real Kivy app (see ``driver.py``) and checks
what the user would see; where the server's view matters (a device really signed out),
the test asks the server itself. Every run also proves the app's DEBUG log and console
hold no token or session id (``conftest.run_demo``). The servers are the suite's own
(``tests/conftest.py``): ``live_server`` and ``api`` for default settings,
``module_server_factory`` where a test needs short timeouts.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from latchkey_client import SignOutReason

from tests.conftest import PASSWORD, Api, ServerProcess, free_port, unique_username

from .conftest import DemoRun

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "demo_app"))
from devserver import running_backend  # the demo is not an installed package
from latchkey_demo.wording import (
    OFFLINE_KEPT,
    STORAGE_LOCKED_AT_START,
    STORAGE_LOCKED_SIGNED_IN,
    sign_out_message,
)

pytestmark = pytest.mark.timeout(240)
RunDemo = Callable[..., DemoRun]
NEW_PASSWORD = "a brand new passphrase for the demo"


def test_sign_in_shows_profile_and_sessions_and_signs_out_the_tests_second_session(
        run_demo: RunDemo, live_server: ServerProcess, api: Api) -> None:
    username = api.register(unique_username("demo"))
    second = api.login(username, device_name="Second phone")

    run = run_demo("sign_in_profile_and_sessions", live_server.base_url,
                   username=username, password=PASSWORD)

    seen = run.observed
    assert seen["username"] == username
    assert seen["auth_level_row"] == "Standard"
    # The session is bound to this installation's DPoP key, kept beside the refresh token.
    assert seen["device_key_row"] == "This device holds its key (app memory, this run only)"
    assert seen["device_name"] == "Test phone"
    assert seen["idle_text"] not in ("", "—")
    assert len(seen["fingerprint"]) == 9
    assert sorted(seen["devices"]) == ["Second phone", "Test phone"]
    assert all(agent for agent in seen["agents"])
    assert any(s.startswith("Last seen") for s in seen["seen"])
    assert seen["this_device_markers"] == [True, False]  # this device listed first, marked
    assert seen["after_revoke"] == ["Test phone"]
    assert seen["notice_after_revoke"] == "That device was signed out."
    assert seen["notice_after_logout"] == "You signed out."
    # httpx logged the revoke's URL; the SDK's filter masked the id the test created.
    # (Booleans first, so a failure cannot print the log it is about.)
    masked = "/v1/auth/sessions/[REDACTED]" in run.log
    leaked = second["session_id"] in run.log + run.output
    assert masked and not leaked, "the revoked session's id was not masked in the app log"
    # The server agrees: the second session's token is refused at once.
    r = api.me(second["access_token"])
    assert r.status_code == 401 and r.json()["code"] == "session_revoked"


def test_sign_out_all_others_then_everywhere(run_demo: RunDemo, live_server: ServerProcess,
                                             api: Api) -> None:
    username = api.register(unique_username("demo"))
    others = [api.login(username, device_name=f"Tablet {i}") for i in range(2)]

    run = run_demo("sign_out_others_and_everywhere", live_server.base_url,
                   username=username, password=PASSWORD)

    assert run.observed["after_others"] == [True]
    assert run.observed["notice"] == "You signed out on all your devices."
    for tokens in others:
        assert api.me(tokens["access_token"]).status_code == 401


def test_sensitive_action_asks_for_the_password_and_changes_the_session_id(
        run_demo: RunDemo, live_server: ServerProcess, api: Api) -> None:
    username = api.register(unique_username("demo"))

    run = run_demo("step_up_and_sensitive_action", live_server.base_url,
                   username=username, password=PASSWORD)

    seen = run.observed
    assert seen["prompt_shown"]
    assert seen["wrong_password_notice"] == "That username and password don't match."
    assert seen["still_signed_in"]
    assert seen["shown_before"] == seen["before"]
    assert seen["shown_after"] != seen["before"]
    assert seen["auth_level"] == "elevated"
    assert seen["notice"] == "Sensitive action completed."


def test_idle_warning_counts_down_stay_signed_in_works_then_logs_out(
        run_demo: RunDemo, module_server_factory: Callable[..., ServerProcess]) -> None:
    short = module_server_factory(idle_timeout=6, access_token_ttl=3)
    with contextlib.closing(Api(short.base_url)) as short_api:
        username = short_api.register(unique_username("idle"))

    # No background checks: they are not user activity, and the test wants silence.
    run = run_demo("idle_warning_then_logout", short.base_url, username=username,
                   password=PASSWORD, idle_warning_seconds=3, check_seconds=0)

    seen = run.observed
    assert 2.0 <= seen["warned_after_seconds"] <= 4.5  # 6 s limit, warned 3 s before
    first, later = seen["countdown"]
    assert first != later and first.startswith("0:0")  # it counts down, visibly
    assert seen["open_after_stay"] is False
    assert seen["screen_after_stay"] == "home"
    assert seen["popup_closed"]
    assert seen["reason"] == "idle"
    assert seen["notice"] == "You were signed out because the app was not used for a while."


def test_back_from_the_background_after_the_idle_limit_is_signed_out(
        run_demo: RunDemo, live_server: ServerProcess, api: Api) -> None:
    username = api.register(unique_username("pause"))

    run = run_demo("pause_and_resume", live_server.base_url, username=username, password=PASSWORD)

    assert run.observed["after_short_pause"] == "home"
    assert run.observed["reason"] == "idle"
    assert "not used for a while" in run.observed["notice"]


@pytest.mark.parametrize(("how", "words"), [
    ("remote", "You were signed out from another device."),
    ("password", "Your password was changed on another device, so this device was signed out."),
])
def test_a_session_ended_elsewhere_shows_up_in_the_app_with_its_reason(
        run_demo: RunDemo, live_server: ServerProcess, api: Api, how: str, words: str) -> None:
    username = api.register(unique_username("remote"))

    run = run_demo("ended_elsewhere", live_server.base_url, username=username, password=PASSWORD,
                   new_password=NEW_PASSWORD, how=how)

    assert run.observed["notice"] == words
    assert run.observed["reason"] == ("remote" if how == "remote" else "password_change")


def test_the_demo_backend_answers_for_the_session_and_refuses_it_once_ended_elsewhere(
        run_demo: RunDemo, module_redis_factory: Callable[..., Any],
        module_server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """The app calls its own API through the SDK's api_origins (R4): the demo backend,
    the Flask example under gunicorn as ``devserver.py`` starts it, on a deployment of its
    own (its store holds this server's session policy). No background checks: the call
    after the remote sign-out is the backend's, and its access log says it refused it."""
    redis = module_redis_factory()
    server = module_server_factory(store_url=redis.url)
    with contextlib.closing(Api(server.base_url)) as own_api:
        username = own_api.register(unique_username("backend"))
    log = tmp_path / "backend.log"
    with running_backend(server.base_url, redis.url, port=free_port(), log_path=log) as url:
        run = run_demo("demo_backend", server.base_url, backend_url=url, username=username,
                       password=PASSWORD, check_seconds=0)

    seen = run.observed
    assert seen["card_shown"]
    assert seen["answer"] == f"Hello, {username}: your session is live."
    assert seen["notice"] == "You were signed out from another device."
    assert seen["reason"] == "remote"
    calls = [line for line in log.read_text().splitlines() if line.startswith("GET /api/")]
    assert calls == ["GET /api/hello 200", "GET /api/hello 401"]


def test_change_password_signs_out_the_other_device_and_keeps_this_one(
        run_demo: RunDemo, live_server: ServerProcess, api: Api) -> None:
    username = api.register(unique_username("pw"))
    other = api.login(username, device_name="Old laptop")

    run = run_demo("change_password", live_server.base_url, username=username, password=PASSWORD,
                   new_password=NEW_PASSWORD)

    assert run.observed["signed_out_text"] == "1 other device was signed out"
    assert run.observed["changed"] and run.observed["still_signed_in"]
    assert api.me(other["access_token"]).status_code == 401
    api.login(username, NEW_PASSWORD)  # the new password works


def test_errors_are_messages_and_the_ui_never_waits_on_the_network(
        run_demo: RunDemo, live_server: ServerProcess, api: Api) -> None:
    username = api.register(unique_username("err"))
    wrong = run_demo("wrong_password_message", live_server.base_url,
                     username=username, password=PASSWORD)
    assert wrong.observed["notice"] == "That username and password don't match."
    assert wrong.observed["screen"] == "signin" and wrong.observed["then_signed_in"]

    down = run_demo("unreachable_server", f"http://127.0.0.1:{free_port()}")
    assert down.observed["tap_returned_in_seconds"] < 0.2  # the call went to a worker
    assert down.observed["busy_while_waiting"] is True  # and a spinner showed meanwhile
    assert down.observed["notice"] == "Can't reach the server. Check your connection and try again."


def test_registration_explains_a_weak_password_then_signs_in(
        run_demo: RunDemo, live_server: ServerProcess) -> None:
    username = unique_username("new")
    run = run_demo("register_and_sign_in", live_server.base_url, username=username,
                   password=PASSWORD)
    assert run.observed["weak_notice"].startswith("That password is too short or too common")
    assert run.observed["username"] == username


def test_stay_signed_in_persists_the_refresh_token_only_when_switched_on(
        run_demo: RunDemo, live_server: ServerProcess, api: Api, tmp_path: Path) -> None:
    username = api.register(unique_username("stay"))
    home = tmp_path / "phone"  # one "install": the app's data survives between runs

    off = run_demo("stay_signed_in", live_server.base_url, storage="file", home=home,
                   username=username, password=PASSWORD, stay=False)
    assert off.observed == {"switch_enabled": True, "stored": False}

    on = run_demo("stay_signed_in", live_server.base_url, storage="file", home=home,
                  username=username, password=PASSWORD, stay=True)
    assert on.observed["stored"] is True
    stored_file = next((home / "config").rglob("session.lkf"))
    assert b"lkr_" not in stored_file.read_bytes()  # encrypted at rest

    again = run_demo("restored", live_server.base_url, storage="file", home=home)
    assert again.observed["username"] == username

    after_logout = run_demo("expect_signin", live_server.base_url, storage="file", home=home)
    assert after_logout.observed["screen"] == "signin"


def test_on_phone_terms_pause_locked_storage_offline_and_a_restored_backup_never_lose_the_user(
        run_demo: RunDemo, server_factory: Callable[..., ServerProcess],
        tmp_path: Path) -> None:
    """The phone tour (``latchkey_demo/phone_tour.py``) at 1080 x 2340, density 2.75.

    The app talks to the server through a proxy (to drop the network); the server's public
    URL is the proxy's, so the app's DPoP proofs name the URL the server answers to.
    """
    port = free_port()
    server = server_factory(issuer=f"http://127.0.0.1:{port}")
    api = Api(server.base_url)
    username = api.register(unique_username("phone"))
    api.close()
    shots = tmp_path / "shots"
    run = run_demo("phone_tour", server.base_url, username=username, password=PASSWORD,
                   storage="file", proxy=True, proxy_port=port, shots_dir=str(shots),
                   density=2.75)
    seen = run.observed
    assert seen["device_key"] == "This device holds its key (encrypted file)"
    # The refresh token copied off the phone fails from a second device (no key of ours),
    # and the phone itself carries on.
    copied = seen["copied_token"]
    assert copied["refused"] and not copied["signed_in"], copied
    assert copied["error"] == "DPoPProofRefusedError" and copied["code"] == "invalid_dpop_proof"
    assert seen["after_copy"]["screen"] == "home" and seen["after_copy"]["signed_in"]
    locked = seen["storage_locked"]
    assert locked["screen"] == "home" and locked["signed_in"]
    assert locked["notice"] == STORAGE_LOCKED_SIGNED_IN
    assert seen["stored_after_unlock"]  # the deferred write landed once unlocked
    offline = seen["offline"]
    assert offline["screen"] == "home" and offline["signed_in"]
    assert offline["notice"] == OFFLINE_KEPT
    at_start = seen["locked_at_start"]
    assert at_start["screen"] == "signin" and at_start["notice"] == STORAGE_LOCKED_AT_START
    assert seen["unlocked_restored"]["screen"] == "home"
    assert seen["unlocked_restored"]["notice"] == "Welcome back — your session was restored."
    restored = seen["backup_restored"]
    assert restored["screen"] == "signin" and not restored["signed_in"]
    assert restored["notice"] == sign_out_message(SignOutReason.STORAGE_LOST)
    assert seen["reason"] == "storage_lost" and seen["new_phone_file_removed"]
    assert seen["idle_after_pause"]["notice"] == sign_out_message(SignOutReason.IDLE)
    assert seen["idle_reason"] == "idle"
    for png in sorted(shots.glob("phone-*.png")):
        with png.open("rb") as f:
            header = f.read(24)
        assert struct.unpack(">II", header[16:24]) == (1080, 2340), png.name
    assert len(list(shots.glob("phone-*.png"))) == 7
