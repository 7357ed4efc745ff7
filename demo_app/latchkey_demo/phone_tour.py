"""Walk the real app through a phone's bad days: a copied token, pause, locked storage,
offline, new phone.

One script for two callers: ``demo_app/render_phone.py`` saves what the user sees at each
step as ``docs/screenshots/phone-*.png``, and ``tests/demo`` (scenario ``phone_tour``)
asserts what those screens say. The storage is the app's real ``EncryptedFileStorage``,
locked for real (its file moved aside and a directory put in its place, so every read and
write fails with an OS error, as a keystore locked since boot fails) and "restored from a
backup" for real (the same file opened under another key). The network is dropped by the
caller (``go_offline``/``go_online``, a proxy in front of the server). The copied token is
the refresh token read out of the app's own store, as a thief with a backup or a debugging
proxy would have it, presented by a second SDK client: another device, without this one's
DPoP key (P1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from latchkey_client import (
    EncryptedFileStorage,
    LatchkeyClient,
    LatchkeyError,
    MemoryStorage,
    SignOutReason,
)

from .scripting import find, settle, tap, type_into, wait_until

__all__ = ["PHONE_DENSITY", "PHONE_SIZE", "Shoot", "phone_tour"]

#: A 6.4" phone: 1080 x 2340 px at density 2.75 (393 x 851 dp).
PHONE_SIZE = (1080, 2340)
PHONE_DENSITY = 2.75

Shoot = Callable[[str], Awaitable[None]]


class _TimeTravel:
    """Move the app's clock (which the SDK measures on) ahead, as a long pause would."""

    def __init__(self, app: Any) -> None:
        self.offset = 0.0
        base = app.clock
        app.clock = lambda: base() + self.offset


def _lock(path: Path) -> None:
    if path.exists():
        path.rename(path.with_name(path.name + ".aside"))
    path.mkdir()


def _unlock(path: Path) -> None:
    shutil.rmtree(path)
    aside = path.with_name(path.name + ".aside")
    if aside.exists():
        aside.rename(path)


async def _sign_in(app: Any, username: str, password: str) -> None:
    await wait_until(lambda: app.screen == "signin", what="the sign-in screen")
    type_into(find(app, "signin", "username"), username)
    type_into(find(app, "signin", "password"), password)
    find(app, "signin", "stay").active = True
    tap(find(app, "signin", "signin_button"))
    await wait_until(lambda: app.screen == "home" and find(app, "home").username
                     and not app.busy, what="Home with the profile")


def _second_device_tries(base_url: str, refresh_token: str) -> dict[str, Any]:
    """Present a copied refresh token from another device (its own SDK, no key of ours)."""
    storage = MemoryStorage()
    storage.save("refresh_token", refresh_token)
    with LatchkeyClient(base_url=base_url, storage=storage, stay_signed_in=True,
                        idle_logout=False) as thief:
        try:
            thief.restore()
        except LatchkeyError as exc:
            return {"refused": True, "error": type(exc).__name__,
                    "code": getattr(exc, "code", None), "signed_in": thief.is_signed_in}
        return {"refused": False, "signed_in": thief.is_signed_in}


async def _pause_resume(app: Any, travel: _TimeTravel, seconds: float) -> None:
    """Send the app to the background for ``seconds`` (on its clock) and bring it back."""
    app.on_pause()
    travel.offset += seconds
    app.on_resume()
    await wait_until(lambda: not app.resuming, what="the resume check")
    await settle(0.5)


async def phone_tour(app: Any, *, username: str, password: str,
                     go_offline: Callable[[], None], go_online: Callable[[], None],
                     shoot: Shoot) -> dict[str, Any]:
    """Run the tour; return what the user saw at each step (screen and message)."""
    seen: dict[str, Any] = {}
    travel = _TimeTravel(app)
    store_path = Path(app.storage.path)

    def note(step: str) -> None:
        seen[step] = {"screen": app.screen, "notice": str(app.notice),
                      "signed_in": bool(app.client and app.client.is_signed_in)}

    await _sign_in(app, username, password)
    app.dismiss_notice()
    await shoot("phone-01-home")
    note("home")
    seen["device_key"] = app.device_key_text

    # 0. The refresh token, copied off this phone, is tried from a second device: refused
    #    (the session is bound to this phone's key); this phone carries on.
    copied = app.storage.load("refresh_token")
    seen["copied_token"] = await asyncio.to_thread(
        _second_device_tries, str(app.client.base_url), copied or "")
    find(app, "home").load()
    await wait_until(lambda: not app.busy, what="Home reloaded after the copy was refused")
    note("after_copy")

    # 1. Locked storage mid-session: the access token is due on resume, the refresh
    #    happens, its new token cannot be written. The user stays signed in.
    _lock(store_path)
    limit = app.client.session.idle_timeout_seconds
    access_life = app.client.session.access_expires_in_seconds
    await _pause_resume(app, travel, min(access_life + 1, limit / 2))
    await wait_until(lambda: "locked" in app.notice, what="the storage-locked message")
    await shoot("phone-02-storage-locked")
    note("storage_locked")
    _unlock(store_path)
    await _pause_resume(app, travel, 1)
    seen["stored_after_unlock"] = (
        app.storage.load("refresh_token") == app.client._core.tokens.refresh_token)
    app.dismiss_notice()

    # 2. The network drops: the session check fails, the session is kept.
    go_offline()
    await _pause_resume(app, travel, 5)
    await wait_until(lambda: "offline" in app.notice, what="the offline message")
    await shoot("phone-03-offline")
    note("offline")
    go_online()
    app.dismiss_notice()

    # 3. Storage locked at start (a reboot before the first unlock): the app restarts
    #    with the store locked, says so, and resumes the session once unlocked.
    _lock(store_path)
    app.on_start()
    await settle(0.8)
    await shoot("phone-04-locked-at-start")
    note("locked_at_start")
    _unlock(store_path)
    await _pause_resume(app, travel, 5)
    await wait_until(lambda: app.screen == "home" and not app.busy, what="Home after unlock")
    await shoot("phone-05-unlocked-restored")
    note("unlocked_restored")

    # 4. A backup restored onto a new phone: the file came over, its key did not.
    new_phone = store_path.with_name("new-phone.lkf")
    shutil.copyfile(store_path, new_phone)
    new_key = secrets.token_bytes(32)  # the new phone's own key store
    app.platform = dataclasses.replace(
        app.platform, storage=EncryptedFileStorage(new_phone, key=new_key))
    app.on_start()
    await wait_until(lambda: app.screen == "signin", what="sign-in on the new phone")
    await settle(0.5)
    await shoot("phone-06-backup-restored")
    note("backup_restored")
    seen["new_phone_file_removed"] = not new_phone.exists()
    seen["reason"] = find(app, "signin").signed_out_reason

    # 5. Away longer than the idle limit: signed out on resume, with the reason.
    await _sign_in(app, username, password)
    app.dismiss_notice()
    await _pause_resume(app, travel, app.client.session.idle_timeout_seconds + 5)
    await wait_until(lambda: app.screen == "signin", what="sign-in after a long pause")
    await settle(0.5)
    await shoot("phone-07-idle-after-pause")
    note("idle_after_pause")
    seen["idle_reason"] = find(app, "signin").signed_out_reason
    seen["expected"] = {"storage_lost": SignOutReason.STORAGE_LOST.value,
                        "idle": SignOutReason.IDLE.value}
    return seen
