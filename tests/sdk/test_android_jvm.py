"""The Android Keystore bridge runs for real: pyjnius into a real JVM, AES-GCM in Java (M1, M2).

``org.latchkey.KeystoreBox`` (demo_app/android/src) is compiled here with ``javac`` and
called through the real pyjnius, exactly as the app calls it on a phone; only its key store
differs (PKCS12 instead of ``AndroidKeyStore``). The Android-only seam stands in twice and
is said so: SharedPreferences is a dict (:class:`DictPrefs`), and the two Android exceptions
a desktop JVM lacks (``UserNotAuthenticatedException``, ``KeyPermanentlyInvalidatedException``)
are compiled here under their Android names and superclasses and thrown by a test key
store, so their mapping is proven through the JVM. That Android really throws them when
the phone is locked or the lock screen is removed is what only a device can prove
(docs/MOBILE.md).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey
from latchkey_client import (
    AndroidKeystoreStorage,
    DPoPKeyLostError,
    LatchkeyClient,
    SignOutReason,
    StorageError,
    StorageLost,
    StorageUnavailable,
)
from latchkey_client.dpop import build_proof, jwk_thumbprint
from latchkey_client.dpop_android import AndroidDeviceKey
from latchkey_client.storage.android import java_bytes

from tests.conftest import PASSWORD, Api, ServerProcess, unique_username

ROOT = Path(__file__).resolve().parents[2]
HELPER_SRC = ROOT / "demo_app" / "android" / "src"
TOKEN = "lkr_" + "Zz9-_" * 20 + "ab"

# Test-only Java: the two Android exception classes under their real names and
# superclasses, and a key store that throws them on demand (lock, invalidate).
_TEST_JAVA = {
    "android/security/keystore/UserNotAuthenticatedException.java": """
package android.security.keystore;
public class UserNotAuthenticatedException extends java.security.InvalidKeyException {
    private static final long serialVersionUID = 1L;
    public UserNotAuthenticatedException() { super("User not authenticated"); }
}
""",
    "android/security/keystore/KeyPermanentlyInvalidatedException.java": """
package android.security.keystore;
public class KeyPermanentlyInvalidatedException extends java.security.InvalidKeyException {
    private static final long serialVersionUID = 1L;
    public KeyPermanentlyInvalidatedException() { super("Key permanently invalidated"); }
}
""",
    "org/latchkey/testing/PlatformKeys.java": """
package org.latchkey.testing;
import android.security.keystore.KeyPermanentlyInvalidatedException;
import android.security.keystore.UserNotAuthenticatedException;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import org.latchkey.KeystoreBox;
/** Keys that fail the way AndroidKeyStore does: locked, or invalidated for good. */
public final class PlatformKeys implements KeystoreBox.Keys {
    private final Map<String, SecretKey> keys = new HashMap<>();
    public boolean locked;
    public boolean invalidated;
    public SecretKey find(String alias) throws java.security.GeneralSecurityException {
        if (locked) throw new UserNotAuthenticatedException();
        if (invalidated) throw new KeyPermanentlyInvalidatedException();
        return keys.get(alias);
    }
    public SecretKey create(String alias) throws java.security.GeneralSecurityException {
        KeyGenerator g = KeyGenerator.getInstance("AES");
        g.init(256);
        SecretKey k = g.generateKey();
        keys.put(alias, k);
        return k;
    }
    public void delete(String alias) { keys.remove(alias); invalidated = false; }
}
""",
}


# The Android API AndroidKeys.java uses, as declared on developer.android.com (API 23+),
# trimmed to the members it calls:
# enough for javac to check the seam's types. That the real android.jar agrees is what the
# APK build proves.
_ANDROID_API_STUBS = {
    "android/security/keystore/KeyProperties.java": """
package android.security.keystore;
public abstract class KeyProperties {
    public static final String KEY_ALGORITHM_AES = "AES";
    public static final String KEY_ALGORITHM_EC = "EC";
    public static final int PURPOSE_ENCRYPT = 1;
    public static final int PURPOSE_DECRYPT = 2;
    public static final int PURPOSE_SIGN = 4;
    public static final String DIGEST_SHA256 = "SHA-256";
    public static final String BLOCK_MODE_GCM = "GCM";
    public static final String ENCRYPTION_PADDING_NONE = "NoPadding";
}
""",
    "android/content/Context.java": """
package android.content;
public abstract class Context {
    public static final int MODE_PRIVATE = 0;
    public abstract SharedPreferences getSharedPreferences(String name, int mode);
}
""",
    "android/content/SharedPreferences.java": """
package android.content;
public interface SharedPreferences {
    String getString(String key, String defValue);
    Editor edit();
    interface Editor {
        Editor putString(String key, String value);
        Editor remove(String key);
        boolean commit();
    }
}
""",
    "android/security/keystore/KeyGenParameterSpec.java": """
package android.security.keystore;
public final class KeyGenParameterSpec implements java.security.spec.AlgorithmParameterSpec {
    public static final class Builder {
        public Builder(String keystoreAlias, int purposes) { }
        public Builder setBlockModes(String... blockModes) { return this; }
        public Builder setEncryptionPaddings(String... paddings) { return this; }
        public Builder setKeySize(int keySize) { return this; }
        public Builder setRandomizedEncryptionRequired(boolean required) { return this; }
        public Builder setAlgorithmParameterSpec(java.security.spec.AlgorithmParameterSpec spec) {
            return this;
        }
        public Builder setDigests(String... digests) { return this; }
        public KeyGenParameterSpec build() { return new KeyGenParameterSpec(); }
    }
}
""",
}


def _java_home() -> Path | None:
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    javac = shutil.which("javac")
    return Path(os.path.realpath(javac)).parents[1] if javac else None


@pytest.fixture(scope="session")
def jvm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Compile the helper (and the test-only Java), start pyjnius' JVM on it, yield autoclass."""
    java_home = _java_home()
    if java_home is None or not (java_home / "bin" / "javac").exists():
        pytest.skip("no JDK here (apt: default-jdk-headless; .ci/run installs it)")
    os.environ["JAVA_HOME"] = str(java_home)
    import jnius_config

    classes = tmp_path_factory.mktemp("jvm-classes")
    sources = tmp_path_factory.mktemp("jvm-test-src")
    for rel, text in _TEST_JAVA.items():
        (sources / rel).parent.mkdir(parents=True, exist_ok=True)
        (sources / rel).write_text(text)
    # AndroidKeys.java needs android.jar, so it is the one file not compiled here.
    files = [str(HELPER_SRC / "org/latchkey/KeystoreBox.java"),
             str(HELPER_SRC / "org/latchkey/DeviceKeys.java"),
             *(str(sources / rel) for rel in _TEST_JAVA)]
    subprocess.run([str(java_home / "bin" / "javac"), "-Xlint:all", "-Werror", "-d",
                    str(classes), *files], check=True, capture_output=True, text=True)
    if jnius_config.vm_running:
        pytest.fail("a JVM was started before this fixture; its classpath lacks the helper")
    jnius_config.set_classpath(str(classes))
    from jnius import autoclass

    yield autoclass


class DictPrefs:
    """SharedPreferences stand-in (Android-only seam): a dict, with an I/O failure switch."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.broken = False

    def get(self, key: str) -> str | None:
        if self.broken:
            raise OSError("disk I/O error")
        return self.values.get(key)

    def put(self, key: str, value: str) -> None:
        if self.broken:
            raise OSError("disk I/O error")
        self.values[key] = value

    def remove(self, key: str) -> None:
        self.values.pop(key, None)


def _box(jvm: Any) -> Any:
    return jvm("org.latchkey.KeystoreBox").inMemory()


def _sealed(prefs: DictPrefs, key: str = "refresh_token") -> bytes:
    raw = prefs.values[key]
    assert raw.startswith("v2:")
    return base64.b64decode(raw[3:])


def _store_box(prefs: DictPrefs, box: bytes, key: str = "refresh_token") -> None:
    prefs.values[key] = "v2:" + base64.b64encode(box).decode()


# -- why the helper exists ------------------------------------------------------------------


def test_direct_cipher_init_with_a_secret_key_picks_the_certificate_overload(jvm: Any) -> None:
    """kivy/pyjnius #207/#757, pinned: if this starts passing, pyjnius fixed the bug."""
    generator = jvm("javax.crypto.KeyGenerator").getInstance("AES")
    generator.init(256)
    key = generator.generateKey()
    cipher_cls = jvm("javax.crypto.Cipher")
    cipher = cipher_cls.getInstance("AES/GCM/NoPadding")
    with pytest.raises(TypeError, match="java/security/cert/Certificate"):
        cipher.init(cipher_cls.ENCRYPT_MODE, key)


# -- round trip --------------------------------------------------------------------------------


def test_android_storage_round_trips_through_the_real_jvm_and_wipes(jvm: Any) -> None:
    box, prefs = _box(jvm), DictPrefs()
    store = AndroidKeystoreStorage(box=box, prefs=prefs)
    assert store.load("refresh_token") is None
    store.save("refresh_token", TOKEN)
    assert TOKEN not in prefs.values["refresh_token"]
    # AES-GCM really ran: a 12-byte IV the provider chose, then ciphertext and a 16-byte tag.
    sealed = _sealed(prefs)
    assert sealed[0] == 12 and len(sealed) == 1 + 12 + len(TOKEN) + 16
    assert box.hasKey("latchkey")
    # A restart of the app (a new storage over the same key store and prefs) reads it.
    assert AndroidKeystoreStorage(box=box, prefs=prefs).load("refresh_token") == TOKEN
    store.save("refresh_token", TOKEN[::-1])
    assert store.load("refresh_token") == TOKEN[::-1]
    store.clear("refresh_token")
    store.clear("refresh_token")
    assert store.load("refresh_token") is None and not prefs.values


def test_android_storage_keeps_its_key_in_a_pkcs12_file_across_restarts(
    jvm: Any, tmp_path: Path
) -> None:
    prefs = DictPrefs()
    path = str(tmp_path / "keys.p12")
    helper = jvm("org.latchkey.KeystoreBox")
    AndroidKeystoreStorage(box=helper.inFile(path, "pw"), prefs=prefs).save("refresh_token", TOKEN)
    assert TOKEN.encode() not in Path(path).read_bytes()
    again = AndroidKeystoreStorage(box=helper.inFile(path, "pw"), prefs=prefs)
    assert again.load("refresh_token") == TOKEN


def test_each_value_is_sealed_with_a_fresh_iv(jvm: Any) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("refresh_token", TOKEN)
    first = _sealed(prefs)
    store.save("refresh_token", TOKEN)
    assert first[1:13] != _sealed(prefs)[1:13]


# -- lost: the secret is gone for good -------------------------------------------------------


def test_a_tampered_value_is_lost_not_absent(jvm: Any) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("refresh_token", TOKEN)
    sealed = bytearray(_sealed(prefs))
    sealed[-1] ^= 1
    _store_box(prefs, bytes(sealed))
    with pytest.raises(StorageLost, match="AEADBadTagException"):
        store.load("refresh_token")
    assert "refresh_token" in prefs.values  # wiping is the client's call, not the store's


def test_a_value_moved_to_another_name_is_lost(jvm: Any) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("refresh_token", TOKEN)
    prefs.values["pending_revocations"] = prefs.values["refresh_token"]
    with pytest.raises(StorageLost):
        store.load("pending_revocations")  # the name is the AAD


def test_a_backup_restored_onto_a_new_phone_is_lost(jvm: Any) -> None:
    prefs = DictPrefs()
    AndroidKeystoreStorage(box=_box(jvm), prefs=prefs).save("refresh_token", TOKEN)
    # The prefs travel in the backup; the Keystore key never leaves the old phone.
    new_phone = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    with pytest.raises(StorageLost, match="key-missing"):
        new_phone.load("refresh_token")


def test_a_value_sealed_under_a_replaced_key_is_lost(jvm: Any) -> None:
    box, prefs = _box(jvm), DictPrefs()
    store = AndroidKeystoreStorage(box=box, prefs=prefs)
    store.save("refresh_token", TOKEN)
    old = prefs.values["refresh_token"]
    box.deleteKey("latchkey")
    store.save("pending_revocations", "[]")  # creates a new key under the same alias
    prefs.values["refresh_token"] = old
    with pytest.raises(StorageLost, match="AEADBadTagException"):
        store.load("refresh_token")
    assert store.load("pending_revocations") == "[]"


@pytest.mark.parametrize("raw", ["v2:AAE=", "v2:not base64!", "v1:aXY=:c2VhbGVk", ""])
def test_an_unreadable_stored_value_is_lost(jvm: Any, raw: str) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("pending_revocations", "[]")  # the key exists: only the value is bad
    prefs.values["refresh_token"] = raw
    with pytest.raises(StorageLost):
        store.load("refresh_token")


def test_a_key_invalidated_by_the_platform_is_lost_and_replaced_on_save(jvm: Any) -> None:
    keys = jvm("org.latchkey.testing.PlatformKeys")()
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=jvm("org.latchkey.KeystoreBox")(keys), prefs=prefs)
    store.save("refresh_token", TOKEN)
    keys.invalidated = True  # e.g. the lock screen was removed
    with pytest.raises(StorageLost, match="KeyPermanentlyInvalidatedException"):
        store.load("refresh_token")
    # The next sign-in can stay signed in again: saving replaces the dead key.
    store.save("refresh_token", TOKEN[::-1])
    assert store.load("refresh_token") == TOKEN[::-1]


def test_a_pkcs12_file_under_another_password_is_lost(jvm: Any, tmp_path: Path) -> None:
    prefs = DictPrefs()
    path = str(tmp_path / "keys.p12")
    helper = jvm("org.latchkey.KeystoreBox")
    AndroidKeystoreStorage(box=helper.inFile(path, "pw"), prefs=prefs).save("refresh_token", TOKEN)
    with pytest.raises(StorageLost, match="UnrecoverableKeyException"):
        AndroidKeystoreStorage(box=helper.inFile(path, "other"), prefs=prefs).load("refresh_token")


# -- unavailable: locked or unreachable, nothing is wiped ------------------------------------


def test_a_locked_keystore_is_unavailable_and_wipes_nothing(jvm: Any) -> None:
    keys = jvm("org.latchkey.testing.PlatformKeys")()
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=jvm("org.latchkey.KeystoreBox")(keys), prefs=prefs)
    store.save("refresh_token", TOKEN)
    keys.locked = True  # not unlocked since boot / user not authenticated
    with pytest.raises(StorageUnavailable, match="UserNotAuthenticatedException") as info:
        store.load("refresh_token")
    assert info.value.retryable
    with pytest.raises(StorageUnavailable):
        store.save("refresh_token", TOKEN[::-1])
    keys.locked = False
    assert store.load("refresh_token") == TOKEN


def test_an_unreachable_key_store_file_is_unavailable(jvm: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    box = jvm("org.latchkey.KeystoreBox").inFile(str(blocker / "keys.p12"), "pw")
    with pytest.raises(StorageUnavailable):
        AndroidKeystoreStorage(box=box, prefs=DictPrefs()).save("refresh_token", TOKEN)


def test_a_failing_preferences_write_is_unavailable(jvm: Any) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("refresh_token", TOKEN)
    prefs.broken = True
    with pytest.raises(StorageUnavailable):
        store.load("refresh_token")
    with pytest.raises(StorageUnavailable):
        store.save("refresh_token", TOKEN)


def test_storage_errors_name_causes_never_the_secret(jvm: Any) -> None:
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    store.save("refresh_token", TOKEN)
    sealed = bytearray(_sealed(prefs))
    sealed[20] ^= 1
    _store_box(prefs, bytes(sealed))
    with pytest.raises(StorageError) as info:
        store.load("refresh_token")
    for text in (str(info.value), repr(info.value), repr(store)):
        assert TOKEN not in text and prefs.values["refresh_token"][3:20] not in text


def test_android_storage_without_the_android_helper_fails_clearly(jvm: Any) -> None:
    # A desktop JVM has KeystoreBox but not AndroidKeys (built only into the APK).
    with pytest.raises(StorageError, match=r"android\.add_src"):
        AndroidKeystoreStorage(prefs=DictPrefs())


def test_android_keys_compiles_against_the_android_api_it_uses(
    jvm: Any, tmp_path: Path
) -> None:
    java_home = _java_home()  # set by the jvm fixture, which skips without a JDK
    assert java_home is not None
    for rel, text in _ANDROID_API_STUBS.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    result = subprocess.run(
        [str(java_home / "bin" / "javac"), "-Xlint:all", "-Werror", "-d", str(tmp_path / "out"),
         str(HELPER_SRC / "org/latchkey/KeystoreBox.java"),
         str(HELPER_SRC / "org/latchkey/DeviceKeys.java"),
         str(HELPER_SRC / "org/latchkey/AndroidKeys.java"),
         *(str(tmp_path / "src" / rel) for rel in _ANDROID_API_STUBS)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "org/latchkey/AndroidKeys.class").exists()


def test_android_storage_works_from_a_worker_thread(jvm: Any) -> None:
    # The SDK refreshes off the UI thread: pyjnius must attach that thread to the JVM.
    prefs = DictPrefs()
    store = AndroidKeystoreStorage(box=_box(jvm), prefs=prefs)
    seen: list[str | None] = []

    def work() -> None:
        store.save("refresh_token", TOKEN)
        seen.append(store.load("refresh_token"))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=30)
    assert seen == [TOKEN]
    assert store.load("refresh_token") == TOKEN


# -- the DPoP key: EC P-256 signing in Java, the private key never in Python (P2) ----------


def test_the_android_dpop_key_signs_proofs_joserfc_and_pyjwt_verify(jvm: Any) -> None:

    helper = jvm("org.latchkey.DeviceKeys").inMemory()
    key = AndroidDeviceKey(helper=helper)
    assert key.signer(create=False) is None and not helper.hasKey("latchkey_dpop")
    signer = key.signer(create=True)
    assert signer is not None and helper.hasKey("latchkey_dpop")
    jwk = signer.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y"}  # the public point only, from the JVM
    for _ in range(20):  # DER -> r||s must hold for every signature, short r and s included
        proof = build_proof(signer, method="POST", issued_at=1,
                            url=httpx.URL("https://a.example/v1/auth/refresh"))
        jws.deserialize_compact(proof, ECKey.import_key(jwk), algorithms=["ES256"])
    assert pyjwt.decode(proof, pyjwt.PyJWK.from_dict(jwk, "ES256").key,
                        algorithms=["ES256"])["htm"] == "POST"
    # A restart of the app finds the same key.
    again = AndroidDeviceKey(helper=helper).signer(create=False)
    assert again is not None and jwk_thumbprint(again.public_jwk()) == jwk_thumbprint(jwk)


def test_the_android_dpop_key_once_deleted_is_lost_for_a_bound_session(jvm: Any) -> None:

    helper = jvm("org.latchkey.DeviceKeys").inMemory()
    key = AndroidDeviceKey(helper=helper)
    signer = key.signer(create=True)
    assert signer is not None
    helper.deleteKey("latchkey_dpop")  # e.g. the app's data was cleared under it
    with pytest.raises(DPoPKeyLostError):
        signer.sign(b"proof")
    # The next sign-in makes a new key (the dead one is not kept in the cache).
    fresh = key.signer(create=True)
    assert fresh is not None and fresh.public_jwk() != signer.public_jwk()
    assert len(fresh.sign(b"proof")) == 64
    key.delete()  # "forget this device"
    key.delete()  # absent is fine
    assert AndroidDeviceKey(helper=helper).signer(create=False) is None


def test_der_to_jose_in_java_pads_and_trims_like_the_jws_spec(jvm: Any) -> None:
    keys = jvm("org.latchkey.DeviceKeys")
    for r, s in ((1, 2), (2**255 + 7, 2**256 - 189), (2**200, 3)):
        raw = java_bytes(keys.derToJose(encode_dss_signature(r, s)))
        assert raw == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_a_session_bound_to_the_jvm_key_works_end_to_end_and_ends_when_the_key_is_lost(
    jvm: Any, live_server: ServerProcess
) -> None:
    """The Java signer's proofs against the real server: login binds the session to the
    Keystore key, requests and a refresh prove it; a key the platform drops ends the
    session cleanly (M2: ``storage_lost``), and the next sign-in makes a new key."""
    helper = jvm("org.latchkey.DeviceKeys").inMemory()
    api = Api(live_server.base_url)
    user = api.register(unique_username("jvm"))
    api.close()
    reasons: list[SignOutReason | None] = []
    with LatchkeyClient(base_url=live_server.base_url, idle_logout=False,
                        device_key=AndroidDeviceKey(helper=helper)) as client:
        client.on("signed_out", lambda e: reasons.append(e.reason))
        assert client.login(username=user, password=PASSWORD).dpop_bound
        assert client.device_key_holder == "Android Keystore"
        assert client.get("/v1/me").json()["username"] == user
        client.auth.ensure_fresh_sync(stale=client._core.tokens)  # refresh, proved in Java
        assert client.get("/v1/me").status_code == 200
        first = client.device_key_thumbprint
        helper.deleteKey("latchkey_dpop")  # e.g. invalidated when the lock screen went
        with pytest.raises(DPoPKeyLostError):
            client.get("/v1/me")
        assert not client.is_signed_in and reasons == [SignOutReason.STORAGE_LOST]
        assert client.login(username=user, password=PASSWORD).dpop_bound
        assert client.device_key_thumbprint not in (None, first)
        assert client.get("/v1/me").status_code == 200
