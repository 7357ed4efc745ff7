"""Pick the server URL, secure storage and device identity for the platform we run on.

The SDK has one storage class per platform (S1); the demo chooses the one that fits:
Android Keystore on Android, the Keychain on iOS, the OS keyring on a desktop. When a
desktop has no secure keyring, the demo does not fall back to a plaintext file: it keeps
the session in memory only and switches "Stay signed in" off, saying why.

Everything is configurable with ``LATCHKEY_DEMO_*`` environment variables so the same app
runs against a laptop's server, an emulator's ``adb reverse`` port, or a test fixture.
"""

from __future__ import annotations

import logging
import os
import platform as _platform
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# The SDK's public names, qualified: which storage class serves which platform reads best
# as ``sdk.KeyringStorage`` beside ``sdk.AndroidKeystoreStorage``.
import latchkey_client as sdk

from . import __version__

__all__ = ["DemoPlatform", "DemoSettings", "boot_clock", "choose_storage", "load_settings",
           "prepare"]

_log = logging.getLogger("latchkey_demo")

#: The desktop default matches ``make run``; on an Android emulator or a USB phone,
#: ``adb reverse tcp:8000 tcp:8000`` makes the same loopback URL reach the laptop.
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class DemoSettings:
    """Everything the app reads from its environment, read once at start."""

    server_url: str
    #: The demo backend's origin (``LATCHKEY_DEMO_BACKEND``), an API the SDK may send the
    #: session to (``api_origins``); empty when there is none.
    backend_url: str
    storage_kind: str
    device_name: str
    user_agent: str
    session_check_seconds: float
    idle_warning_seconds: float | None
    data_dir: Path


def _kivy_platform() -> str:
    from kivy.utils import platform

    return str(platform)


def _device_name(kind: str) -> str:
    override = os.environ.get("LATCHKEY_DEMO_DEVICE_NAME")
    if override:
        return override[:64]
    if kind == "android":
        try:
            from jnius import autoclass

            build = autoclass("android.os.Build")
            return f"{build.MANUFACTURER} {build.MODEL}"[:64]
        except ImportError:
            return "Android device"
    if kind == "ios":
        return "iPhone"
    return f"{socket.gethostname()} ({_platform.system() or 'desktop'})"[:64]


def load_settings(data_dir: Path) -> DemoSettings:
    """Read the ``LATCHKEY_DEMO_*`` variables once, with safe defaults."""
    kind = _kivy_platform()
    warning = os.environ.get("LATCHKEY_DEMO_IDLE_WARNING_SECONDS")
    return DemoSettings(
        server_url=os.environ.get("LATCHKEY_DEMO_SERVER", DEFAULT_SERVER_URL),
        backend_url=os.environ.get("LATCHKEY_DEMO_BACKEND", "").rstrip("/"),
        storage_kind=os.environ.get("LATCHKEY_DEMO_STORAGE", "auto"),
        device_name=_device_name(kind),
        user_agent=(
            f"LatchkeyDemo/{__version__} ({kind}; {_platform.system()} "
            f"{_platform.release()}) Kivy"
        )[:200],
        session_check_seconds=float(os.environ.get("LATCHKEY_DEMO_CHECK_SECONDS", "15")),
        idle_warning_seconds=float(warning) if warning else None,
        data_dir=data_dir,
    )


def choose_storage(settings: DemoSettings) -> tuple[sdk.Storage, str | None]:
    """Return the secure storage to use and, if "stay signed in" is unavailable, why.

    ``LATCHKEY_DEMO_STORAGE``: ``auto`` (per platform), ``memory``, ``keyring``, or
    ``file`` (an AES-GCM file keyed by ``LATCHKEY_DEMO_FILE_PASSPHRASE``; for headless
    test machines, where there is no keyring).
    """
    kind = settings.storage_kind
    platform_name = _kivy_platform()
    try:
        if kind == "memory":
            return sdk.MemoryStorage(), "This build keeps your session in memory only."
        if kind == "file":
            passphrase = os.environ.get("LATCHKEY_DEMO_FILE_PASSPHRASE", "")
            path = settings.data_dir / "session.lkf"
            return sdk.EncryptedFileStorage(path, passphrase=passphrase), None
        if kind == "keyring" or (kind == "auto" and platform_name not in ("android", "ios")):
            return sdk.KeyringStorage(service="latchkey-demo"), None
        if platform_name == "android":
            return sdk.AndroidKeystoreStorage(alias="latchkey_demo"), None
        if platform_name == "ios":
            return sdk.IOSKeychainStorage(service="latchkey-demo"), None
    except sdk.StorageError as exc:
        _log.warning("secure storage unavailable (%s); keeping the session in memory",
                     type(exc).__name__)
        return sdk.MemoryStorage(), (
            "No secure storage on this device, so you will be signed out when the app "
            "closes."
        )
    return sdk.MemoryStorage(), "This build keeps your session in memory only."


def device_id(data_dir: Path) -> str:
    """Return this install's random device id, creating it on first run.

    Not a secret (it only binds sessions to the install, D3) and not derived from the
    hardware, so it cannot track the user across apps.
    """
    path = data_dir / "device_id"
    try:
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            return existing
    except OSError:
        pass
    new = uuid.uuid4().hex
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new, encoding="ascii")
    except OSError:
        _log.warning("could not save the device id; using a fresh one for this run")
    return new


@dataclass(frozen=True)
class DemoPlatform:
    """What the platform gives the app: its settings, storage and identity, chosen once."""

    settings: DemoSettings
    storage: sdk.Storage
    #: Why "Stay signed in" is unavailable, or ``None`` when a secure store exists.
    storage_unavailable_reason: str | None
    device_id: str

    @property
    def secure_storage_available(self) -> bool:
        """Whether "Stay signed in" can be offered on this device."""
        return self.storage_unavailable_reason is None

    @property
    def storage_note(self) -> str:
        """The line the sign-in screen shows under the "Stay signed in" switch."""
        return self.storage_unavailable_reason or (
            "Keeps you signed in with this device's secure storage.")


def prepare(data_dir: Path) -> DemoPlatform:
    """Read the settings, pick the storage and load the device id for this platform.

    The one call the App makes at start, so the App holds no platform decision itself.
    """
    settings = load_settings(data_dir)
    storage, reason = choose_storage(settings)
    return DemoPlatform(settings=settings, storage=storage,
                        storage_unavailable_reason=reason,
                        device_id=device_id(settings.data_dir))


def boot_clock() -> float:
    """Return seconds on a monotonic clock that keeps counting while the phone sleeps.

    ``time.monotonic`` stops during suspend on Linux and Android, so a phone locked for an
    hour would look paused for seconds; ``CLOCK_BOOTTIME`` includes suspend and, like
    ``monotonic``, cannot be moved by changing the device's clock.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()
