"""R3: access tokens are RFC 9068 JWT access tokens that never outlive their session, and
the verifiers services actually use (PyJWT's ``PyJWKClient``, joserfc, Authlib) accept
them configured as docs/OAUTH.md says; plus the evidence for keeping ``alg: EdDSA``."""

from __future__ import annotations

import time
import warnings

import httpx
import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwk import KeySet
from latchkey_server.errors import InvalidToken

from tests.conftest import Api
from tests.server.oauth_support import DEFAULT_CLIENT_ID, jwt_parts


@pytest.fixture(scope="module")
def short_sessions(module_server_factory):
    """Sessions that end 6 s after sign-in, with 5 s access tokens."""
    return module_server_factory(access_token_ttl=5, idle_timeout=6, absolute_timeout=6)


def test_access_token_is_an_rfc_9068_jwt_with_client_id_and_the_issuer_url(live_server,
                                                                          api):
    _, tokens = api.new_user_session()
    header, claims = jwt_parts(tokens["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "EdDSA" and header["kid"]
    assert claims["client_id"] == DEFAULT_CLIENT_ID
    issuer = httpx.get(live_server.base_url + "/.well-known/oauth-authorization-server"
                       ).json()["issuer"]
    assert claims["iss"] == issuer == live_server.base_url
    assert set(claims) >= {"iss", "aud", "sub", "sid", "client_id", "jti", "iat", "exp"}


def test_a_jwt_that_is_not_typed_as_an_access_token_is_refused(app):
    from latchkey_server.extension import EXTENSION_KEY
    from latchkey_server.tokens import new_session_id, new_user_id

    tokens = app.extensions[EXTENSION_KEY].tokens
    good = tokens.issue_access_token(new_user_id(), new_session_id(), "normal", 0)
    claims = jwt.decode(good, options={"verify_signature": False})
    key = tokens._keyring.current
    for typ in ("JWT", "id_token+jwt", None):
        headers = {"kid": key.kid, "typ": typ}
        forged = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)
        with pytest.raises(InvalidToken):
            tokens.verify_access_token(forged)
    assert tokens.verify_access_token(good).client_id == DEFAULT_CLIENT_ID


@pytest.mark.parametrize("face", ["oauth", "v1"])
def test_a_refresh_just_before_the_absolute_end_gets_a_token_that_ends_with_it(
        short_sessions, face):
    api = Api(short_sessions.base_url)
    try:
        signed_in_at = time.time()
        _, tokens = api.new_user_session()
        time.sleep(3.2)  # 2.8 s of the 6 s session left: less than the 5 s access TTL
        if face == "oauth":
            r = api.http.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": DEFAULT_CLIENT_ID})
        else:
            r = api.refresh(tokens["refresh_token"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["absolute_expires_in"] <= 3
        assert body["expires_in"] <= body["absolute_expires_in"] < 5
        claims = jwt_parts(body["access_token"])[1]
        assert claims["exp"] - claims["iat"] == body["expires_in"]
        assert claims["exp"] <= signed_in_at + 6 + 1  # never past the session's end
    finally:
        api.close()


def test_pyjwt_pyjwkclient_verifies_the_access_token_from_the_metadata_jwks(live_server,
                                                                           api):
    _, tokens = api.new_user_session()
    meta = httpx.get(live_server.base_url + "/.well-known/oauth-authorization-server").json()
    # The verifier configuration docs/OAUTH.md gives, verbatim.
    jwks_client = jwt.PyJWKClient(meta["jwks_uri"])
    signing_key = jwks_client.get_signing_key_from_jwt(tokens["access_token"])
    claims = jwt.decode(tokens["access_token"], signing_key.key, algorithms=["EdDSA"],
                        audience="latchkey-api", issuer=meta["issuer"],
                        options={"require": ["exp", "iat", "sub", "client_id"]})
    assert claims["sid"] == tokens["session_id"]
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"


def test_joserfc_verifies_the_access_token_when_told_to_accept_eddsa(live_server, api):
    _, tokens = api.new_user_session()
    meta = httpx.get(live_server.base_url + "/.well-known/oauth-authorization-server").json()
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    # By default joserfc refuses EdDSA (RFC 9864 deprecates the name): the evidence.
    with pytest.raises(UnsupportedAlgorithmError):
        jose_jwt.decode(tokens["access_token"], keys)
    # Configured as docs/OAUTH.md says, it verifies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its SecurityWarning: "EdDSA is deprecated"
        token = jose_jwt.decode(tokens["access_token"], keys, algorithms=["EdDSA"])
    assert token.header["typ"] == "at+jwt"
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": "latchkey-api"},
        exp={"essential": True},
    ).validate(token.claims)


def test_why_alg_stays_eddsa_pyjwt_and_authlib_cannot_verify_ed25519(live_server, api):
    """RFC 9864's ``Ed25519`` name would lock out two of the three verifiers tried."""
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519")
    ed25519_token = jose_jwt.encode({"alg": "Ed25519"}, {"a": 1}, key, algorithms=["Ed25519"])
    public = key.as_dict(private=False)
    with pytest.raises(NotImplementedError):
        jwt.encode({"a": 1}, key.private_key, algorithm="Ed25519")
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(ed25519_token, jwt.PyJWK({**public, "alg": "EdDSA"}).key,
                   algorithms=["Ed25519"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # authlib.jose's own deprecation in favour of joserfc
        from authlib.jose import JsonWebKey, JsonWebToken
        from authlib.jose.errors import UnsupportedAlgorithmError as AuthlibUnsupported

        with pytest.raises(AuthlibUnsupported):
            JsonWebToken(["Ed25519"]).decode(ed25519_token, JsonWebKey.import_key(public))
        # ... while Authlib's jose verifies EdDSA tokens as they are.
        _, tokens = api.new_user_session()
        jwks = httpx.get(live_server.base_url + "/.well-known/jwks.json").json()
        claims = JsonWebToken(["EdDSA"]).decode(tokens["access_token"],
                                                JsonWebKey.import_key_set(jwks))
        claims.validate()
    assert claims["client_id"] == DEFAULT_CLIENT_ID
