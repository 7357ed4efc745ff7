"""Storage failures that do not log people out (M2), through the client, on a real server.

The store is a real ``EncryptedFileStorage``, locked for real (``storage_locks.py``: every
read and write fails with an OS error, which the backend reports as
``StorageUnavailable``) or lost for real (opened under another key, or damaged: it reports
``StorageLost``). A locked store must never end a session or wipe anything; a lost one must
end it cleanly with reason ``storage_lost``, revoking what can be revoked, and never raise
out of the constructor. Every test runs on the sync and the async client.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from latchkey_client import (
    EncryptedFileStorage,
    EventName,
    SignOutReason,
    StorageLost,
)

from tests.conftest import ServerProcess

from .conftest import PASSWORD, Sdk, make_user, me_status
from .storage_locks import FileStoreLock, restore_backup


def stored(path: Path, key: bytes, name: str = "refresh_token") -> str | None:
    return EncryptedFileStorage(path, key=key).load(name)


def kept_on_file(sdk: Sdk, target: Any, path: Path, key: bytes) -> Any:
    """A client that stays signed in with the encrypted file at ``path``."""
    return sdk(target, storage=EncryptedFileStorage(path, key=key), stay_signed_in=True)


def events_of(client: Any) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []
    for name in EventName:
        client.on(name, lambda e: seen.append((e.name.value, e.reason and e.reason.value)))
    return seen


def test_a_store_locked_at_start_is_not_a_sign_out_and_the_session_is_read_once_unlocked(
    live_server: ServerProcess, file_store_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    with kept_on_file(sdk, live_server, file_store_path, key) as first:
        first.login(username=make_user(live_server), password=PASSWORD)
        token = first._core.tokens.refresh_token
    lock = FileStoreLock(file_store_path)
    lock.lock()  # the phone rebooted and is not unlocked yet
    phone = kept_on_file(sdk, live_server, file_store_path, key)
    seen = events_of(phone)
    assert not phone.is_signed_in and phone.storage_unavailable
    assert phone.signed_out_reason is None  # not signed out: not known yet
    assert phone.restore() is None  # still locked: nothing to resume, nothing wiped
    lock.unlock()
    assert stored(file_store_path, key) == token  # nothing was wiped while locked
    assert phone.restore() is not None
    assert phone.is_signed_in and not phone.storage_unavailable
    assert phone.get("/v1/me").status_code == 200
    assert ("signed_in", None) in seen
    assert phone.logout().server_confirmed


def test_a_refresh_while_the_store_is_locked_keeps_the_session_and_stores_it_later(
    short_ttl_server: ServerProcess, file_store_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    phone = kept_on_file(sdk, short_ttl_server, file_store_path, key)
    seen = events_of(phone)
    phone.login(username=make_user(short_ttl_server), password=PASSWORD)
    first = phone._core.tokens.refresh_token
    lock = FileStoreLock(file_store_path)
    lock.lock()
    phone.refresh_now()  # the server rotates; the new token cannot be written yet
    assert phone.is_signed_in and phone.storage_unavailable
    assert ("storage_unavailable", None) in seen
    assert not any(name == "signed_out" for name, _ in seen)
    assert phone.get("/v1/me").status_code == 200  # still locked: the session goes on
    rotated = phone._core.tokens.refresh_token
    assert rotated != first
    lock.unlock()
    assert stored(file_store_path, key) == first  # not yet written
    assert phone.get("/v1/me").status_code == 200  # the next call writes it first
    assert stored(file_store_path, key) == rotated and not phone.storage_unavailable
    assert phone.logout().server_confirmed


def test_a_logout_while_the_store_is_locked_clears_it_before_pause_returns_once_unlocked(
    live_server: ServerProcess, file_store_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    phone = kept_on_file(sdk, live_server, file_store_path, key)
    phone.login(username=make_user(live_server), password=PASSWORD)
    lock = FileStoreLock(file_store_path)
    lock.lock()
    assert phone.logout().server_confirmed  # the local wipe cannot reach the store
    assert not phone.is_signed_in and phone.storage_unavailable
    lock.unlock()
    assert stored(file_store_path, key) is not None  # the clear is still owed
    phone.on_pause()
    assert stored(file_store_path, key) is None and not phone.storage_unavailable


def test_revocations_pending_in_a_store_locked_at_start_are_never_overwritten(
    live_server: ServerProcess, proxy_to: Any, file_store_path: Path, sdk: Sdk
) -> None:
    proxy = proxy_to(live_server)
    key = os.urandom(32)
    user = make_user(live_server)
    phone = sdk(proxy, storage=EncryptedFileStorage(file_store_path, key=key))
    phone.login(username=user, password=PASSWORD)
    first_access = phone._core.tokens.access_token
    proxy.go_offline()
    assert phone.logout().pending  # remembered on disk
    phone.close()
    lock = FileStoreLock(file_store_path)
    lock.lock()
    restarted = sdk(proxy, storage=EncryptedFileStorage(file_store_path, key=key))
    assert restarted.storage_unavailable  # the pending list could not be read
    proxy.go_online()
    restarted.login(username=user, password=PASSWORD)
    second_access = restarted._core.tokens.access_token
    proxy.go_offline()
    assert restarted.logout().pending  # cannot be stored either: the list on disk is unread
    lock.unlock()
    restarted.on_pause()  # merged with what is on disk, then stored, before pause returns
    on_disk = json.loads(stored(file_store_path, key, "pending_revocations") or "[]")
    assert len(on_disk) == 2
    proxy.go_online()
    assert restarted.flush_pending_revocations() == 0
    assert me_status(live_server, first_access) == 401
    assert me_status(live_server, second_access) == 401


def test_a_backup_restored_onto_a_new_phone_is_a_clean_sign_out_with_reason_storage_lost(
    live_server: ServerProcess, tmp_path: Path, sdk: Sdk
) -> None:
    old_phone_path = tmp_path / "old-phone.bin"
    with kept_on_file(sdk, live_server, old_phone_path, os.urandom(32)) as old_phone:
        user = make_user(live_server)
        old_phone.login(username=user, password=PASSWORD)
    # The new phone has the file from the backup but not the key, which never leaves a
    # device: the constructor must not raise.
    new_path = restore_backup(old_phone_path, tmp_path / "new-phone.bin")
    new_key = os.urandom(32)
    phone = kept_on_file(sdk, live_server, new_path, new_key)
    assert not phone.is_signed_in and not phone.storage_unavailable
    assert phone.signed_out_reason is SignOutReason.STORAGE_LOST
    assert not new_path.exists()  # the unreadable file is gone: a clean state
    phone.login(username=user, password=PASSWORD)  # and signing in again works
    assert stored(new_path, new_key) == phone._core.tokens.refresh_token
    assert phone.logout().server_confirmed


def test_a_store_lost_under_a_live_session_signs_out_and_revokes_it_on_the_server(
    short_ttl_server: ServerProcess, file_store_path: Path, sdk: Sdk
) -> None:
    key = os.urandom(32)
    phone = kept_on_file(sdk, short_ttl_server, file_store_path, key)
    seen = events_of(phone)
    user = make_user(short_ttl_server)
    phone.login(username=user, password=PASSWORD)
    session_id = phone.session.session_id
    # The key is replaced under the running app (a platform-invalidated key): the file
    # can no longer be opened, so the next refresh cannot be kept.
    EncryptedFileStorage(file_store_path.with_name("other.bin"), key=os.urandom(32)).save(
        "refresh_token", "x")
    file_store_path.with_name("other.bin").replace(file_store_path)
    time.sleep(1.1)  # the access token is due: the next call refreshes
    with pytest.raises(StorageLost) as info:
        phone.get("/v1/me")
    assert "lkr_" not in str(info.value)
    assert not phone.is_signed_in
    assert ("signed_out", "storage_lost") in seen
    assert phone.signed_out_reason is SignOutReason.STORAGE_LOST
    assert phone.pending_revocations == 0  # the new refresh token was revoked at once
    other = sdk(short_ttl_server)
    other.login(username=user, password=PASSWORD)
    assert session_id not in [s.session_id for s in other.sessions()]
    other.logout()
