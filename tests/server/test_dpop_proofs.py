"""P1: the proof checks of ``latchkey_resource.dpop`` on their own: the RFCs' own examples,
every step of RFC 9449 section 4.3, and hostile proofs, which are a clean ``DPoPError``,
never another exception (the server would answer that with a 500).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from latchkey_resource.dpop import (
    INVALID_DPOP_PROOF,
    MAX_PROOF_LENGTH,
    USE_DPOP_NONCE,
    DPoPError,
    NonceSource,
    access_token_hash,
    jwk_thumbprint,
    normalise_htu,
    verify_proof,
)

from tests.server.dpop_support import DPoPKey

URL = "https://auth.example.com/v1/auth/refresh"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check(proof: str | list[str], **kwargs: Any) -> Any:
    args: dict[str, Any] = {"method": "POST", "url": URL, "now": time.time(),
                            "iat_window_seconds": 60, **kwargs}
    return verify_proof(proof if isinstance(proof, list) else [proof], **args)


# -- the RFCs' own examples ----------------------------------------------------------------
def test_the_rfc_7638_example_thumbprint_matches():
    # RFC 7638 section 3.1: the RSA key and its SHA-256 thumbprint.
    jwk = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxu"
                "hDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf"
                "0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91Cb"
                "OpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFC"
                "ur-kEgU8awapJzKnqDKgw"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_rfc_9449_example_key_thumbprint_and_ath_match():
    # RFC 9449 section 4.1's proof key, whose thumbprint is section 6.1's cnf.jkt, and
    # section 7.1's access token with its ath.
    jwk = {"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
           "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"}
    assert jwk_thumbprint(jwk) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    assert (access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
            == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo")


def test_the_thumbprint_ignores_members_outside_the_required_set():
    key = DPoPKey()
    assert jwk_thumbprint({**key.jwk, "kid": "x", "use": "sig"}) == key.jkt


# -- accepted ----------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_good_proof_is_accepted_with_its_thumbprint_and_jti(alg):
    key = DPoPKey(alg)
    proof = check(key.proof("POST", URL, jti="abc"))
    assert (proof.jkt, proof.jti, proof.alg) == (key.jkt, "abc", alg)


@pytest.mark.parametrize(("htu", "url"), [
    ("HTTPS://AUTH.Example.COM/v1/auth/refresh", URL),
    ("https://auth.example.com:443/v1/auth/refresh", URL),
    ("https://auth.example.com/v1/auth/refresh?a=1#f", URL),
    ("http://127.0.0.1:80/x", "http://127.0.0.1/x"),
    ("http://[::1]:8000/x", "http://[::1]:8000/x"),
])
def test_htu_matches_after_normalisation(htu, url):
    key = DPoPKey()
    assert check(key.proof("POST", htu), url=url).jkt == key.jkt


def test_htu_path_case_and_port_still_matter():
    assert normalise_htu("https://a.example/X") != normalise_htu("https://a.example/x")
    assert normalise_htu("https://a.example:8443/x") != normalise_htu("https://a.example/x")
    assert normalise_htu("https://a.example") == "https://a.example/"


# -- refused, one per step ----------------------------------------------------------------
def refused(proof: str | list[str], code: str = INVALID_DPOP_PROOF, **kwargs: Any) -> str:
    with pytest.raises(DPoPError) as caught:
        check(proof, **kwargs)
    assert caught.value.error == code
    return caught.value.description


def forge(header: dict[str, Any] | str, claims: dict[str, Any] | str,
          signature: str = "AAAA") -> str:
    """Assemble a JWT from raw parts, without any library's help (to be hostile)."""
    def part(value: dict[str, Any] | str) -> str:
        return b64(value if isinstance(value, str) else json.dumps(value))
    return f"{part(header)}.{part(claims)}.{signature}"


def test_no_proof_or_two_proofs_are_refused():
    key = DPoPKey()
    refused([])
    refused([key.proof("POST", URL), key.proof("POST", URL)])


def test_each_claim_check_refuses_a_proof():
    key = DPoPKey()
    refused(key.proof("GET", URL))  # htm
    refused(key.proof("POST", "https://auth.example.com/v1/auth/login"))  # htu
    refused(key.proof("POST", "https://evil.example.com/v1/auth/refresh"))  # htu host
    refused(key.proof("POST", URL, iat=time.time() - 90))  # stale
    refused(key.proof("POST", URL, iat=time.time() + 90))  # future
    refused(key.proof("POST", URL, claims={"iat": "now"}))  # wrong type
    refused(key.proof("POST", URL, claims={"iat": True}))
    refused(key.proof("POST", URL, jti="x" * 129))  # too long
    refused(key.proof("POST", URL, claims={"jti": 7}))
    refused(key.proof("POST", URL, claims={"htu": None}))
    refused(key.proof("POST", URL, header={"typ": "JWT"}))
    refused(key.proof("POST", URL, header={"typ": None}))


def test_ath_is_checked_on_resources():
    key = DPoPKey()
    refused(key.proof("POST", URL), access_token="tok")
    refused(key.proof("POST", URL, access_token="other"), access_token="tok")
    refused(key.proof("POST", URL, claims={"ath": ["x"]}), access_token="tok")
    assert check(key.proof("POST", URL, access_token="tok"), access_token="tok")


def test_algorithms_other_than_es256_and_eddsa_are_refused():
    key = DPoPKey()
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": int(time.time())}
    for alg in ("none", "HS256", "RS256", "ES384", "ES256K", None, 5):
        refused(forge({"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}, claims))
    # An ES256 header over an Ed25519 key, and the other way round.
    refused(forge({"typ": "dpop+jwt", "alg": "ES256", "jwk": DPoPKey("EdDSA").jwk}, claims))
    refused(forge({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.jwk}, claims))


def test_a_private_or_invalid_jwk_is_refused():
    key = DPoPKey()
    for bad_jwk in (
        {**key.jwk, "d": b64(b"\x01" * 32)},  # a private key
        {**key.jwk, "k": "c2VjcmV0"},  # a symmetric one
        {**key.jwk, "x": b64(b"\x00" * 32), "y": b64(b"\x00" * 32)},  # not on the curve
        {**key.jwk, "x": b64(b"\x01" * 31)},  # short coordinate
        {**key.jwk, "x": "!!!"},  # not base64url
        {**key.jwk, "crv": "P-384"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {k: v for k, v in key.jwk.items() if k != "y"},
        "a string", None, [1, 2],
    ):
        refused(key.proof("POST", URL, header={"jwk": bad_jwk}))


def test_a_signature_by_another_key_or_tampered_claims_is_refused():
    key = DPoPKey()
    refused(DPoPKey().proof("POST", URL, header={"jwk": key.jwk}))
    head, _, sig = key.proof("POST", URL).split(".")
    tampered = b64(json.dumps({"jti": "j", "htm": "POST", "htu": URL, "iat": int(time.time())}))
    refused(f"{head}.{tampered}.{sig}")


def _jwt(header: str | bytes, claims: str = "{}") -> str:
    return f"{b64(header)}.{b64(claims)}.AAAA"


HOSTILE = {
    "empty": "",
    "one segment": "abc",
    "four segments": "a.b.c.d",
    "empty segment": "a..c",
    "bad base64": "e$e.e$e.e$e",
    "impossible base64 length": "eyJhIjox.eyJhIjox.a",
    "not json": _jwt("nope"),
    "json array": _jwt("[1]"),
    "json string": _jwt('"x"'),
    "NaN iat": _jwt("{}", '{"iat": NaN}'),
    "duplicate member": _jwt('{"typ":"dpop+jwt","typ":"JWT"}'),
    "not utf-8": _jwt(b"\xff\xfe"),
    "deep nesting": _jwt("[" * 100000 + "]" * 100000),
    "huge": "a" * (MAX_PROOF_LENGTH + 1),
    "unicode": "\u00e9.\u00e9.\u00e9",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_proofs_are_a_clean_refusal(name):
    refused(HOSTILE[name])


def test_a_huge_iat_or_a_duplicate_claim_is_a_clean_refusal():
    key = DPoPKey()
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk}
    refused(forge(header, {"jti": "j", "htm": "POST", "htu": URL, "iat": 10**400}))
    refused(forge(header, '{"jti":"j","jti":"k","htm":"POST","htu":"x","iat":1}'))


# -- nonces --------------------------------------------------------------------------------
def test_nonces_are_required_rotate_and_agree_across_instances():
    key = DPoPKey()
    one, other = NonceSource(b"s" * 32, period_seconds=60), NonceSource(b"s" * 32,
                                                                        period_seconds=60)
    now = 1_000_000.0
    nonce = one.current(now)
    assert other.is_valid(nonce, now)  # another worker, same secret
    assert one.is_valid(nonce, now + 60)  # the previous step's stays good
    assert not one.is_valid(nonce, now + 120)  # then it is gone
    assert one.current(now + 60) != nonce
    assert not NonceSource(b"t" * 32).is_valid(nonce, now)

    def valid(value: str) -> bool:
        return one.is_valid(value, now)

    assert refused(key.proof("POST", URL), USE_DPOP_NONCE, nonce_valid=valid)
    refused(key.proof("POST", URL, nonce="stale"), USE_DPOP_NONCE, nonce_valid=valid)
    refused(key.proof("POST", URL, claims={"nonce": 5}), USE_DPOP_NONCE, nonce_valid=valid)
    assert check(key.proof("POST", URL, nonce=nonce), nonce_valid=valid).jkt == key.jkt
