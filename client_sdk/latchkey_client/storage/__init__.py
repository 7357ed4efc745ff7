"""Keep the refresh token where the platform keeps secrets; nothing on disk by default.

One small interface (:class:`Storage`: ``load``, ``save``, ``clear``) and one class per
platform. Pick by platform:

=====================  ====================================  ==========================
platform               class                                 extra
=====================  ====================================  ==========================
any (default)          :class:`MemoryStorage`                —
Linux/macOS/Windows    :class:`KeyringStorage`               ``latchkey-client[keyring]``
headless/desktop       :class:`EncryptedFileStorage`         ``latchkey-client[file]``
Android                :class:`AndroidKeystoreStorage`       ``latchkey-client[android]``
iOS                    :class:`IOSKeychainStorage`           ``latchkey-client[ios]``
=====================  ====================================  ==========================

Every backend but memory imports its platform library lazily, so ``import latchkey_client``
works on any desktop without them. Each maps its platform's failures onto two errors (M2):
``StorageUnavailable`` (locked or unreachable now: wipe nothing, try later) and
``StorageLost`` (the secret will never be read again); docs/MOBILE.md has the table.
"""

from __future__ import annotations

from .android import AndroidKeystoreStorage
from .base import MemoryStorage, Storage
from .file import EncryptedFileStorage
from .ios import IOSKeychainStorage
from .keyring import KeyringStorage

__all__ = [
    "AndroidKeystoreStorage",
    "EncryptedFileStorage",
    "IOSKeychainStorage",
    "KeyringStorage",
    "MemoryStorage",
    "Storage",
]
