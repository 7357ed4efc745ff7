"""DPoP proofs (RFC 9449) as the SDK builds them, checked against the RFCs' own examples and
verified by two independent JOSE libraries (joserfc, PyJWT); the device keys behind them (P2).

Every proof here is made by the SDK's dependency-free encoder and a real key (the
``cryptography`` software key, or the iOS key's logic over a test bridge, said so below);
nothing is compared to a string the SDK produced itself.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey
from latchkey_client import (
    ConfigurationError,
    DPoPKeyLostError,
    DPoPKeyUnavailableError,
    EncryptedFileStorage,
    LatchkeyClient,
    MemoryStorage,
    StorageLost,
    StorageUnavailable,
)
from latchkey_client.dpop import (
    ProofState,
    access_token_hash,
    build_proof,
    dpop_error,
    htu_of,
    jwk_thumbprint,
)
from latchkey_client.dpop_android import AndroidDeviceKey
from latchkey_client.dpop_ios import IOSDeviceKey, ecdsa_der_to_jose
from latchkey_client.dpop_keys import DEVICE_KEY_NAME, StoredDeviceKey, default_device_key
from latchkey_client.storage.base import Storage
from latchkey_client.storage.ios import ERR_SEC_INTERACTION_NOT_ALLOWED, ERR_SEC_ITEM_NOT_FOUND

URL = httpx.URL("https://api.example.com/v1/me?page=2#top")


def _segments(proof: str) -> tuple[dict, dict]:
    def part(text: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, claims, _ = proof.split(".")
    return part(header), part(claims)


# -- the RFCs' own examples ----------------------------------------------------------------


def test_thumbprint_of_the_rfc7638_example_key_is_the_rfc_value() -> None:
    # RFC 7638 s3.1 (an RSA key) and s3.1's result.
    key = {
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhD"
             "R1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf"
             "0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n9"
             "1CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF4"
             "4-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_of_the_rfc9449_example_proof_key_is_its_cnf_jkt() -> None:
    # RFC 9449 s4.2 (the proof's jwk) and s6.1 (the bound token's cnf.jkt).
    key = {"kty": "EC", "crv": "P-256", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
           "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}
    assert jwk_thumbprint(key) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_ath_of_the_rfc9449_example_access_token_is_the_rfc_value() -> None:
    # RFC 9449 s7.1.
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_thumbprint_matches_joserfcs_for_the_keys_the_sdk_makes() -> None:
    for alg in ("ES256", "EdDSA"):
        signer = StoredDeviceKey(MemoryStorage(), alg=alg).signer(create=True)
        assert signer is not None
        jwk = signer.public_jwk()
        imported = (ECKey if alg == "ES256" else OKPKey).import_key(jwk)
        assert jwk_thumbprint(jwk) == imported.thumbprint()


# -- proofs, verified by independent libraries ----------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_proof_verifies_with_joserfc_and_pyjwt_and_has_the_rfc_shape(alg: str) -> None:
    signer = StoredDeviceKey(MemoryStorage(), alg=alg).signer(create=True)
    assert signer is not None
    now = int(time.time())
    proof = build_proof(signer, method="get", url=URL, issued_at=now,
                        access_token="at-123", nonce="n-1")
    jwk = signer.public_jwk()
    # joserfc: the public key from the proof's own header verifies the signature.
    key = (ECKey if alg == "ES256" else OKPKey).import_key(jwk)
    verified = jws.deserialize_compact(proof, key, algorithms=[alg])
    header, claims = verified.headers(), json.loads(verified.payload)
    assert header == {"typ": "dpop+jwt", "alg": alg, "jwk": jwk}
    assert "d" not in header["jwk"]  # the public key only
    # PyJWT, independently, over the same header key.
    public = pyjwt.PyJWK.from_dict(jwk, algorithm=alg).key
    assert pyjwt.decode(proof, public, algorithms=[alg]) == claims
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.example.com/v1/me"  # no query, no fragment
    assert claims["iat"] == now and claims["nonce"] == "n-1"
    assert claims["ath"] == access_token_hash("at-123")
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) >= 16


def test_a_proof_signed_by_another_key_fails_verification() -> None:
    mine = StoredDeviceKey(MemoryStorage()).signer(create=True)
    theirs = StoredDeviceKey(MemoryStorage()).signer(create=True)
    assert mine is not None and theirs is not None
    proof = build_proof(mine, method="POST", url=URL, issued_at=1)
    with pytest.raises(Exception):  # noqa: B017 - joserfc's BadSignatureError
        jws.deserialize_compact(proof, ECKey.import_key(theirs.public_jwk()),
                                algorithms=["ES256"])


def test_every_proof_has_a_new_jti_and_token_requests_carry_no_ath() -> None:
    signer = StoredDeviceKey(MemoryStorage()).signer(create=True)
    assert signer is not None
    proofs = [build_proof(signer, method="POST", url=URL, issued_at=1) for _ in range(50)]
    claims = [_segments(p)[1] for p in proofs]
    assert len({c["jti"] for c in claims}) == 50
    assert all("ath" not in c and "nonce" not in c for c in claims)


def test_htu_keeps_scheme_host_port_and_path_only() -> None:
    assert htu_of(httpx.URL("http://127.0.0.1:8080/v1/auth/refresh?x=1#f")) == (
        "http://127.0.0.1:8080/v1/auth/refresh")


# -- nonces and the server's clock -------------------------------------------------------


def _answer(status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_the_server_clock_offset_comes_from_the_date_header() -> None:
    state = ProofState()
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    assert state.observe(URL, _answer(Date=format_datetime(ahead, usegmt=True)))
    assert abs(state.now() - ahead.timestamp()) < 3
    # A clock in sync (within the header's one-second resolution) adds no offset.
    assert state.observe(URL, _answer(Date=format_datetime(datetime.now(UTC), usegmt=True)))
    assert state.offset_seconds == 0.0
    assert not state.observe(URL, _answer(Date="not a date"))


def test_nonces_are_kept_per_origin() -> None:
    state = ProofState()
    state.observe(URL, _answer(**{"DPoP-Nonce": "n-api"}))
    assert state.nonce_for(httpx.URL("https://api.example.com/other")) == "n-api"
    assert state.nonce_for(httpx.URL("https://auth.example.com/v1")) is None


def test_dpop_errors_are_read_in_each_of_the_servers_three_shapes() -> None:
    problem = httpx.Response(400, json={"code": "use_dpop_nonce"})
    oauth = httpx.Response(400, json={"error": "invalid_dpop_proof"})
    resource = httpx.Response(401, headers={
        "WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="nonce"'})
    assert [dpop_error(r) for r in (problem, oauth, resource)] == [
        "use_dpop_nonce", "invalid_dpop_proof", "use_dpop_nonce"]
    assert dpop_error(httpx.Response(401, json={"code": "token_expired"})) is None
    assert dpop_error(httpx.Response(500, json={"code": "use_dpop_nonce"})) is None


# -- the software key: kept like the refresh token (P2) ----------------------------------


def test_the_software_key_is_sealed_in_the_encrypted_file_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "session.bin"
    storage = EncryptedFileStorage(path, passphrase="correct horse battery staple")
    first = StoredDeviceKey(storage).signer(create=True)
    assert first is not None
    stored = json.loads(storage.load(DEVICE_KEY_NAME) or "{}")
    assert stored["d"].encode() not in path.read_bytes()  # never on disk in the clear
    again = StoredDeviceKey(EncryptedFileStorage(path, passphrase="correct horse battery staple"))
    reopened = again.signer(create=False)
    assert reopened is not None and reopened.public_jwk() == first.public_jwk()
    again.delete()
    assert StoredDeviceKey(storage).signer(create=False) is None


class _FailingStorage(Storage):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def load(self, key: str) -> str | None:
        raise self.error

    def save(self, key: str, value: str) -> None:
        raise self.error

    def clear(self, key: str) -> None:
        raise self.error


def test_a_locked_key_store_is_unavailable_and_a_lost_one_is_lost() -> None:
    with pytest.raises(DPoPKeyUnavailableError) as locked:
        StoredDeviceKey(_FailingStorage(StorageUnavailable("locked"))).signer(create=True)
    assert locked.value.retryable
    with pytest.raises(DPoPKeyLostError):
        StoredDeviceKey(_FailingStorage(StorageLost("gone"))).signer(create=True)
    garbled = MemoryStorage()
    garbled.save(DEVICE_KEY_NAME, '{"alg": "ES256", "d": 7}')
    with pytest.raises(DPoPKeyLostError):
        StoredDeviceKey(garbled).signer(create=False)  # a refresh: the session's key is gone
    replaced = StoredDeviceKey(garbled).signer(create=True)  # a sign-in makes a new one
    assert replaced is not None and len(replaced.sign(b"x")) == 64
    assert StoredDeviceKey(garbled).signer(create=False).public_jwk() == replaced.public_jwk()


def test_dpop_is_on_by_default_and_can_be_turned_off() -> None:
    with LatchkeyClient(base_url="http://127.0.0.1:9") as client:
        assert client.device_key_holder == "app memory, this run only"
        assert client.device_key_thumbprint is None  # made at the first sign-in
    with LatchkeyClient(base_url="http://127.0.0.1:9", dpop=False) as client:
        assert client.device_key_holder is None
    with pytest.raises(ConfigurationError):
        StoredDeviceKey(MemoryStorage(), alg="HS256")


def test_a_software_key_is_kept_on_disk_only_when_the_app_stays_signed_in(
    tmp_path: Path,
) -> None:
    storage = EncryptedFileStorage(tmp_path / "s.bin", key=b"k" * 32)
    with LatchkeyClient(base_url="http://127.0.0.1:9", storage=storage) as client:
        assert client.device_key_holder == "app memory, this run only"  # S1, as the token
    with LatchkeyClient(base_url="http://127.0.0.1:9", storage=storage,
                        stay_signed_in=True) as client:
        assert client.device_key_holder == "encrypted file"


# -- the iOS key: its logic over a test bridge (Security.framework runs only on a phone) ---


def test_der_signatures_become_jose_r_s_as_cryptography_encodes_them() -> None:
    for r, s in ((1, 2), (2**255 + 7, 2**256 - 189), (2**200, 3)):
        assert ecdsa_der_to_jose(encode_dss_signature(r, s)) == (
            r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    with pytest.raises(ValueError):
        ecdsa_der_to_jose(b"\x30\x02\x02\x00")


class _EnclaveStandIn:
    """A Security.framework stand-in (test-only): a software P-256 key per tag."""

    def __init__(self) -> None:
        self.keys: dict[bytes, ec.EllipticCurvePrivateKey] = {}
        self.locked = False

    def public_point(self, tag: bytes) -> tuple[int, bytes | None]:
        if self.locked:
            return ERR_SEC_INTERACTION_NOT_ALLOWED, None
        key = self.keys.get(tag)
        if key is None:
            return ERR_SEC_ITEM_NOT_FOUND, None
        from cryptography.hazmat.primitives import serialization

        return 0, key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)

    def create(self, tag: bytes) -> int:
        self.keys[tag] = ec.generate_private_key(ec.SECP256R1())
        return 0

    def sign(self, tag: bytes, data: bytes) -> tuple[int, bytes | None]:
        if self.locked:
            return ERR_SEC_INTERACTION_NOT_ALLOWED, None
        return 0, self.keys[tag].sign(data, ec.ECDSA(hashes.SHA256()))

    def delete(self, tag: bytes) -> int:
        return 0 if self.keys.pop(tag, None) else ERR_SEC_ITEM_NOT_FOUND


def test_the_ios_key_signs_proofs_joserfc_verifies_and_maps_a_locked_keychain() -> None:
    bridge = _EnclaveStandIn()
    key = IOSDeviceKey(bridge=bridge)
    assert key.signer(create=False) is None
    signer = key.signer(create=True)
    assert signer is not None
    proof = build_proof(signer, method="POST", url=URL, issued_at=1)
    jws.deserialize_compact(proof, ECKey.import_key(signer.public_jwk()), algorithms=["ES256"])
    bridge.locked = True
    with pytest.raises(DPoPKeyUnavailableError):
        signer.sign(b"x")
    bridge.locked = False
    key.delete()
    assert IOSDeviceKey(bridge=bridge).signer(create=False) is None


def test_on_a_phone_the_key_is_the_platforms_whatever_the_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-for-android and kivy-ios mark the app's environment; no cryptography needed.
    monkeypatch.setenv("ANDROID_ARGUMENT", "/data/app")
    assert isinstance(default_device_key(MemoryStorage(), persist=False), AndroidDeviceKey)
    monkeypatch.delenv("ANDROID_ARGUMENT")
    monkeypatch.setenv("KIVY_BUILD", "ios")
    assert isinstance(default_device_key(MemoryStorage(), persist=True), IOSDeviceKey)
    monkeypatch.delenv("KIVY_BUILD")
    assert isinstance(default_device_key(MemoryStorage(), persist=True), StoredDeviceKey)
