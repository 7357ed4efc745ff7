"""One app process sharing an encrypted token store with others (test_e2e_refresh.py).

It builds its client at once (loading the refresh token stored *now*, which will be stale
by the time it is used), waits for the go file, then makes a few authenticated calls.
Prints one JSON line: how many calls succeeded and what failed. With a sixth argument
``share`` it shares the access token with its siblings (``share_access_token=True``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from latchkey_client import EncryptedFileStorage, LatchkeyClient, LatchkeyError

base_url, store_path, key_hex, ready_file, go_file = sys.argv[1:6]
share = sys.argv[6:7] == ["share"]  # share_access_token: one refresh for every process
client = LatchkeyClient(
    base_url=base_url,
    storage=EncryptedFileStorage(store_path, key=bytes.fromhex(key_hex)),
    stay_signed_in=True,
    idle_logout=False,
    share_access_token=share,
)
Path(ready_file).touch()
while not Path(go_file).exists():
    time.sleep(0.01)
ok, errors = 0, []
for _ in range(3):
    try:
        client.get("/v1/me")
        ok += 1
    except LatchkeyError as exc:
        errors.append(repr(exc))
print(json.dumps({"ok": ok, "errors": errors, "refreshes": client.auth.refresh_requests}))
