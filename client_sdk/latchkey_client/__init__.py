"""Latchkey client SDK: sign users in, keep their session safe and fresh, sign them out.

Small (httpx plus optional platform extras), typed, and hard to misuse into leaking a
token: tokens travel only in the ``Authorization`` header or a refresh body, never in URLs,
``repr``s, exceptions or logs. Start with :class:`LatchkeyClient` (or
:class:`AsyncLatchkeyClient`); ``docs/SDK.md`` is the guide.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors as _errors
from ._base import (
    DEFAULT_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT_SECONDS,
    LOGOUT_TIMEOUT,
    RemoteSession,
)
from ._core import LogoutResult
from .aclient import AsyncLatchkeyClient
from .auth import LatchkeyAuth
from .client import LatchkeyClient
from .dpop import Signer
from .dpop_android import AndroidDeviceKey
from .dpop_ios import IOSDeviceKey
from .dpop_keys import DeviceKey, StoredDeviceKey
from .errors import *  # noqa: F403
from .events import AuthEvent, EventName, SessionInfo, SignOutReason
from .redaction import TokenRedactingFilter, install_redaction, redact
from .storage import (
    AndroidKeystoreStorage,
    EncryptedFileStorage,
    IOSKeychainStorage,
    KeyringStorage,
    MemoryStorage,
    Storage,
)
from .transport import spki_sha256

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT_SECONDS",
    "LOGOUT_TIMEOUT",
    "AndroidDeviceKey",
    "AndroidKeystoreStorage",
    "AsyncLatchkeyClient",
    "AuthEvent",
    "DeviceKey",
    "EncryptedFileStorage",
    "EventName",
    "IOSDeviceKey",
    "IOSKeychainStorage",
    "KeyringStorage",
    "LatchkeyAuth",
    "LatchkeyClient",
    "LogoutResult",
    "MemoryStorage",
    "RemoteSession",
    "SessionInfo",
    "SignOutReason",
    "Signer",
    "Storage",
    "StoredDeviceKey",
    "TokenRedactingFilter",
    "__version__",
    "install_redaction",
    "redact",
    "spki_sha256",
]
__all__ += _errors.__all__  # the form checkers read, so the errors count as exported too
