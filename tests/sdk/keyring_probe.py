"""Run inside a D-Bus session with gnome-keyring unlocked: exercise KeyringStorage for real.

Invoked by test_storage.py as a subprocess (a Secret Service needs its own session bus).
Prints one JSON line with what it observed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import secretstorage
from keyring.backends import SecretService
from latchkey_client import EncryptedFileStorage, KeyringStorage


def _error(call: Callable[[], object]) -> str | None:
    """Return the name of the exception ``call`` raised (and whether it is retryable)."""
    try:
        call()
    except Exception as exc:  # the test asserts on the name
        return f"{type(exc).__name__}{'*' if getattr(exc, 'retryable', False) else ''}"
    return None


store = KeyringStorage(service="latchkey-test")
backend = store._backend  # the member actually used, even when keyring offers a chain
token = "lkr_" + "A" * 102
store.save("refresh_token", token)
loaded = store.load("refresh_token")
# A second instance (another process would do the same) sees the value too.
again = KeyringStorage(service="latchkey-test").load("refresh_token")
store.clear("refresh_token")
after_clear = store.load("refresh_token")
store.clear("refresh_token")  # clearing an absent key is fine

file_store = EncryptedFileStorage(sys.argv[1], keyring_service="latchkey-test")
file_store.save("refresh_token", token)
file_again = EncryptedFileStorage(sys.argv[1], keyring_service="latchkey-test").load(
    "refresh_token"
)

# M2: a locked collection means "try later": typed, retryable, and nothing is wiped.
store.save("refresh_token", token)
bus = secretstorage.dbus_init()
secretstorage.get_default_collection(bus).lock()
locked = {
    "load": _error(lambda: store.load("refresh_token")),
    "save": _error(lambda: store.save("refresh_token", token[::-1])),
    "clear": _error(lambda: store.clear("refresh_token")),
    # The encrypted file whose key the locked keyring holds (a fresh instance: no cache).
    "file_load": _error(lambda: EncryptedFileStorage(
        sys.argv[1], keyring_service="latchkey-test").load("refresh_token")),
}
# Items stay searchable by their (non-secret) attributes while locked: still there.
kept = len(list(secretstorage.search_items(
    bus, {"service": "latchkey-test", "username": "refresh_token"})))
# No Secret Service reachable at all (the session bus is gone): unavailable too.
os.environ["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=/nonexistent/latchkey-bus"
unreachable = _error(lambda: KeyringStorage(
    service="latchkey-test", backend=SecretService.Keyring()).load("refresh_token"))

print(json.dumps({
    "backend": f"{type(backend).__module__}.{type(backend).__name__}",
    "round_trip": loaded == token,
    "second_instance": again == token,
    "after_clear": after_clear,
    "file_with_keyring_key": file_again == token,
    "locked": locked,
    "kept_while_locked": kept,
    "unreachable": unreachable,
}))
