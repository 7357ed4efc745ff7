"""Run inside a D-Bus session with gnome-keyring unlocked: exercise KeyringStorage for real.

Invoked by test_storage.py as a subprocess (a Secret Service needs its own session bus).
Prints one JSON line with what it observed.
"""

from __future__ import annotations

import json
import sys

from latchkey_client import EncryptedFileStorage, KeyringStorage

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
print(json.dumps({
    "backend": f"{type(backend).__module__}.{type(backend).__name__}",
    "round_trip": loaded == token,
    "second_instance": again == token,
    "after_clear": after_clear,
    "file_with_keyring_key": file_again == token,
}))
