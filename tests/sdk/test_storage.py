"""Storage backends round-trip and wipe, and never hold a token in plaintext (S1).

The desktop keyring test runs against a real Secret Service (gnome-keyring in its own
D-Bus session). The Android backend runs on a real JVM in test_android_jvm.py. The iOS
backend runs its real storage logic through a desktop bridge that returns the Keychain's
status codes: no iOS runs here, so its mapping is what is proven, not Security.framework.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import keyring.backends.fail
import keyring.backends.null
import pytest
from keyring.backends import SecretService
from keyring.backends.chainer import ChainerBackend
from keyrings.alt.file import PlaintextKeyring
from latchkey_client import (
    EncryptedFileStorage,
    InsecureStorageError,
    IOSKeychainStorage,
    KeyringStorage,
    MemoryStorage,
    StorageError,
    StorageLost,
    StorageUnavailable,
)
from latchkey_client.storage import ios

TOKEN = "lkr_" + "Zz9-_" * 20 + "ab"


def test_memory_storage_round_trips_and_wipes() -> None:
    store = MemoryStorage()
    assert store.load("refresh_token") is None
    store.save("refresh_token", TOKEN)
    assert store.load("refresh_token") == TOKEN
    store.clear("refresh_token")
    store.clear("refresh_token")
    assert store.load("refresh_token") is None


# -- encrypted file ------------------------------------------------------------------------


def test_encrypted_file_round_trips_across_instances_and_wipes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    EncryptedFileStorage(path, passphrase="pass phrase").save("refresh_token", TOKEN)
    other = EncryptedFileStorage(path, passphrase="pass phrase")
    assert other.load("refresh_token") == TOKEN
    other.save("pending_revocations", "[]")
    other.clear("refresh_token")
    assert other.load("refresh_token") is None and other.load("pending_revocations") == "[]"
    other.clear("pending_revocations")
    assert not path.exists()


def test_encrypted_file_is_mode_0600_and_holds_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    EncryptedFileStorage(path, key=os.urandom(32)).save("refresh_token", TOKEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = path.read_bytes()
    assert TOKEN.encode() not in blob and b"refresh_token" not in blob
    assert blob.startswith(b"LKF1")


def test_encrypted_file_writes_atomically_via_replace(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    store = EncryptedFileStorage(path, key=os.urandom(32))
    store.save("refresh_token", TOKEN)
    first_inode = path.stat().st_ino
    store.save("refresh_token", TOKEN[::-1])
    assert path.stat().st_ino != first_inode  # a new file replaced the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.bin"]  # no temp left


def test_encrypted_file_under_a_wrong_or_rotated_passphrase_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    EncryptedFileStorage(path, passphrase="right").save("refresh_token", TOKEN)
    before = path.read_bytes()
    rotated = EncryptedFileStorage(path, passphrase="rotated")
    with pytest.raises(StorageLost):
        rotated.load("refresh_token")
    # A mistyped passphrase must not overwrite what the right one still reads...
    with pytest.raises(StorageLost):
        rotated.save("refresh_token", TOKEN[::-1])
    assert path.read_bytes() == before
    assert EncryptedFileStorage(path, passphrase="right").load("refresh_token") == TOKEN
    # ...but clearing (the client's wipe after StorageLost) deletes the lost file.
    rotated.clear("refresh_token")
    assert not path.exists()
    rotated.save("refresh_token", TOKEN)
    assert rotated.load("refresh_token") == TOKEN


def test_encrypted_file_under_another_raw_key_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    EncryptedFileStorage(path, key=os.urandom(32)).save("refresh_token", TOKEN)
    with pytest.raises(StorageLost):
        EncryptedFileStorage(path, key=os.urandom(32)).load("refresh_token")


@pytest.mark.parametrize("damage", ["flip_tag", "flip_salt", "truncate_one", "truncate_header",
                                    "foreign_magic", "empty"])
def test_a_tampered_or_truncated_encrypted_file_is_lost(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "tokens.bin"
    store = EncryptedFileStorage(path, key=os.urandom(32))
    store.save("refresh_token", TOKEN)
    blob = bytearray(path.read_bytes())
    if damage == "flip_tag":
        blob[-1] ^= 1
    elif damage == "flip_salt":
        blob[5] ^= 1
    elif damage == "truncate_one":
        del blob[-1]
    elif damage == "truncate_header":
        del blob[10:]
    elif damage == "foreign_magic":
        blob[:4] = b"XXXX"
    else:
        blob.clear()
    path.write_bytes(bytes(blob))
    with pytest.raises(StorageLost) as info:
        store.load("refresh_token")
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


def test_an_encrypted_file_that_cannot_be_read_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    path.mkdir()  # a real OS error on read (IsADirectoryError), as for root as for anyone
    store = EncryptedFileStorage(path, key=os.urandom(32))
    with pytest.raises(StorageUnavailable) as info:
        store.load("refresh_token")
    assert info.value.retryable
    with pytest.raises(StorageUnavailable):
        store.save("refresh_token", TOKEN)
    assert path.is_dir()  # nothing was replaced or deleted


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-0000 file anyway")
def test_an_encrypted_file_without_read_permission_is_unavailable_and_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.bin"
    store = EncryptedFileStorage(path, key=os.urandom(32))
    store.save("refresh_token", TOKEN)
    path.chmod(0)
    try:
        with pytest.raises(StorageUnavailable):
            store.load("refresh_token")
    finally:
        path.chmod(0o600)
    assert store.load("refresh_token") == TOKEN


def test_encrypted_file_needs_exactly_one_key_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EncryptedFileStorage(tmp_path / "x", passphrase="a", key=os.urandom(32))
    with pytest.raises(ValueError):
        EncryptedFileStorage(tmp_path / "x")
    with pytest.raises(ValueError):
        EncryptedFileStorage(tmp_path / "x", key=b"short")


# -- keyring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [PlaintextKeyring(), keyring.backends.fail.Keyring(),
                                     keyring.backends.null.Keyring()])
def test_keyring_storage_refuses_insecure_backends(backend: object) -> None:
    with pytest.raises(InsecureStorageError):
        KeyringStorage(backend=backend)


def test_keyring_storage_refuses_a_chain_of_only_insecure_backends() -> None:
    class PlaintextOnlyChain(ChainerBackend):
        backends = [PlaintextKeyring(), keyring.backends.fail.Keyring()]  # type: ignore[assignment]

    with pytest.raises(InsecureStorageError):
        KeyringStorage(backend=PlaintextOnlyChain())


def test_keyring_storage_uses_the_secure_member_of_a_chain_never_the_chain() -> None:
    class MixedChain(ChainerBackend):
        backends = [PlaintextKeyring(), SecretService.Keyring()]  # type: ignore[assignment]

    assert "backend=Keyring" in repr(KeyringStorage(backend=MixedChain()))
    assert "SecretService" in type(KeyringStorage(backend=MixedChain())._backend).__module__


def _secret_service_available() -> str | None:
    for tool in ("dbus-run-session", "gnome-keyring-daemon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt: dbus, gnome-keyring)"
    return None


def test_keyring_storage_round_trips_on_a_real_secret_service(tmp_path: Path) -> None:
    """Round trip, then lock the collection and drop the bus: both read as unavailable."""
    missing = _secret_service_available()
    if missing:
        pytest.skip(f"no Secret Service here: {missing}")
    home = tmp_path / "home"
    home.mkdir()
    probe = Path(__file__).with_name("keyring_probe.py")
    script = (
        "echo -n test-login-password | gnome-keyring-daemon --unlock --components=secrets "
        f">/dev/null 2>&1; exec {sys.executable} {probe} {tmp_path / 'file.bin'}"
    )
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DBUS_", "GNOME_KEYRING", "XDG_RUNTIME"))}
    env.update({"HOME": str(home), "PYTHON_KEYRING_BACKEND": ""})
    env.pop("PYTHON_KEYRING_BACKEND")
    result = subprocess.run(
        ["dbus-run-session", "--", "sh", "-c", script],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "keyring.backends.SecretService.Keyring"
    assert report["round_trip"] and report["second_instance"]
    assert report["after_clear"] is None
    assert report["file_with_keyring_key"]
    # M2: locked collection -> StorageUnavailable (retryable, "*") for every call, and the
    # entry is still there; no Secret Service on the bus -> StorageUnavailable too.
    assert report["locked"] == {"load": "StorageUnavailable*", "save": "StorageUnavailable*",
                                "clear": "StorageUnavailable*",
                                "file_load": "StorageUnavailable*"}
    assert report["kept_while_locked"] == 1
    assert report["unreachable"] == "StorageUnavailable*"
    # Nothing fell through to a plaintext keyring file in the fresh home directory.
    leaked = [p for p in home.rglob("*") if p.is_file() and b"lkr_AAAAAAAAAAAA" in p.read_bytes()]
    assert not leaked


# -- iOS (desktop bridge) --------------------------------------------------------------------


class DesktopKeychainBridge:
    """SecItem semantics (status codes included) on a dict."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], bytes] = {}
        self.locked = False
        self.race_on_add = False
        self.fail_with: int | None = None

    def copy(self, service: str, account: str) -> tuple[int, bytes | None]:
        if self.locked:
            return ios.ERR_SEC_INTERACTION_NOT_ALLOWED, None
        if self.fail_with is not None:
            return self.fail_with, None
        data = self.items.get((service, account))
        if data is None:
            return ios.ERR_SEC_ITEM_NOT_FOUND, None
        return ios.ERR_SEC_SUCCESS, data

    def add(self, service: str, account: str, data: bytes) -> int:
        if self.race_on_add or (service, account) in self.items:
            self.items[(service, account)] = b"other writer"
            return ios.ERR_SEC_DUPLICATE_ITEM
        self.items[(service, account)] = data
        return ios.ERR_SEC_SUCCESS

    def update(self, service: str, account: str, data: bytes) -> int:
        if self.fail_with is not None:
            return self.fail_with
        if (service, account) not in self.items:
            return ios.ERR_SEC_ITEM_NOT_FOUND
        self.items[(service, account)] = data
        return ios.ERR_SEC_SUCCESS

    def delete(self, service: str, account: str) -> int:
        return ios.ERR_SEC_SUCCESS if self.items.pop((service, account), None) is not None \
            else ios.ERR_SEC_ITEM_NOT_FOUND


def test_ios_storage_round_trips_updates_and_wipes() -> None:
    bridge = DesktopKeychainBridge()
    store = IOSKeychainStorage(bridge=bridge)
    assert store.load("refresh_token") is None
    store.save("refresh_token", TOKEN)
    store.save("refresh_token", TOKEN[::-1])
    assert store.load("refresh_token") == TOKEN[::-1]
    store.clear("refresh_token")
    store.clear("refresh_token")
    assert store.load("refresh_token") is None


def test_ios_storage_survives_an_add_race() -> None:
    bridge = DesktopKeychainBridge()
    bridge.race_on_add = True
    IOSKeychainStorage(bridge=bridge).save("refresh_token", TOKEN)
    assert bridge.items[("latchkey", "refresh_token")] == TOKEN.encode()


def test_ios_storage_reads_a_device_locked_since_boot_as_unavailable() -> None:
    bridge = DesktopKeychainBridge()
    IOSKeychainStorage(bridge=bridge).save("refresh_token", TOKEN)
    bridge.locked = True
    with pytest.raises(StorageUnavailable, match="locked") as info:
        IOSKeychainStorage(bridge=bridge).load("refresh_token")
    assert info.value.retryable
    bridge.locked = False
    assert IOSKeychainStorage(bridge=bridge).load("refresh_token") == TOKEN  # nothing wiped


@pytest.mark.parametrize(("status", "error"), [
    (ios.ERR_SEC_INTERACTION_NOT_ALLOWED, StorageUnavailable),
    (ios.ERR_SEC_NOT_AVAILABLE, StorageUnavailable),
    (ios.ERR_SEC_MISSING_ENTITLEMENT, StorageUnavailable),
    (ios.ERR_SEC_USER_CANCELED, StorageUnavailable),
    (ios.ERR_SEC_AUTH_FAILED, StorageLost),
    (ios.ERR_SEC_DECODE, StorageLost),
    (ios.ERR_SEC_NO_SUCH_KEYCHAIN, StorageLost),
    (-50, StorageError),  # errSecParam: a bug, neither locked nor lost
])
def test_ios_storage_maps_each_keychain_status_to_unavailable_or_lost(
    status: int, error: type[StorageError]
) -> None:
    bridge = DesktopKeychainBridge()
    bridge.items[("latchkey", "refresh_token")] = TOKEN.encode()
    bridge.fail_with = status
    store = IOSKeychainStorage(bridge=bridge)
    for call in (lambda: store.load("refresh_token"), lambda: store.save("refresh_token", TOKEN)):
        with pytest.raises(error) as info:
            call()
        assert type(info.value) is error  # exactly: not a bare StorageError, not the other kind


def test_ios_storage_reads_an_item_that_is_not_text_as_lost() -> None:
    bridge = DesktopKeychainBridge()
    bridge.items[("latchkey", "refresh_token")] = b"\xff\xfe"
    with pytest.raises(StorageLost):
        IOSKeychainStorage(bridge=bridge).load("refresh_token")


def test_ios_storage_off_apple_fails_clearly_at_construction() -> None:
    with pytest.raises(StorageError, match="iOS"):
        IOSKeychainStorage()
