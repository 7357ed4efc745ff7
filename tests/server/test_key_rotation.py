"""T5 rotation: ``latchkey-server keys rotate`` promotes the published next key to current
while the server runs (two gunicorn workers), and nobody is logged out: tokens signed by the
old key keep working until they expire, the JWKS keeps its public key that long, and
sessions go on through refresh. The next key is in the JWKS before it signs, so a verifier
that cached the JWKS before a rotation verifies tokens signed after it without refetching.
End to end against a running server and redis-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import FAST_ARGON2, VENV_BIN, Api, ServerProcess


def kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def jwks_kids(server: ServerProcess) -> list[str]:
    return [k["kid"] for k in httpx.get(server.base_url + "/.well-known/jwks.json").json()["keys"]]


def eventually(check: Callable[[], bool], timeout_seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def keys_command(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``latchkey-server keys ...`` with the server's configuration, as an operator."""
    return subprocess.run([str(VENV_BIN / "latchkey-server"), "keys", *args],
                          env=server.env, capture_output=True, text=True, timeout=60)


def audit_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if "admin_action" in line]


def verify_with_jwks(server: ServerProcess, token: str) -> dict:
    """Verify a token as a third-party service would: with the published JWKS only."""
    keys = httpx.get(server.base_url + "/.well-known/jwks.json").json()["keys"]
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid(token)))
    return jwt.decode(token, key, algorithms=["EdDSA"], audience="latchkey-api")


def test_keys_rotate_on_a_running_server_logs_nobody_out(server_factory):
    # Lifetimes leave room for the CLI, which takes seconds on a loaded machine.
    server = server_factory(workers=2, access_token_ttl=10, key_retention=12)
    api = Api(server.base_url)
    try:
        _, tokens = api.new_user_session()
        old_kid = kid(tokens["access_token"])
        # The current key, then the next one: published, not signing yet.
        published_kids = jwks_kids(server)
        assert published_kids[0] == old_kid and len(published_kids) == 2
        next_kid = published_kids[1]

        r = keys_command(server, "rotate")
        assert r.returncode == 0, r.stderr
        new_kid = r.stdout.strip()
        assert new_kid == next_kid  # the key verifiers already had is the one that signs
        audit = audit_lines(r.stderr)
        assert audit[0]["action"] == "keys_rotate" and audit[0]["kid"] == new_kid
        newer_next = audit[0]["next_kid"]
        assert newer_next not in (old_kid, new_kid)

        # Every worker has the new manifest on its next request: the JWKS lists the new
        # key first, the new next key, and still the old one.
        for _ in range(6):
            assert jwks_kids(server) == [new_kid, newer_next, old_kid]
        # The access token signed by the old key still works, on whichever worker.
        for _ in range(6):
            r = api.me(tokens["access_token"])
            assert r.status_code == 200, r.text
        assert verify_with_jwks(server, tokens["access_token"])["sid"] == tokens["session_id"]

        # New tokens, from refresh and from a new login, are signed by the new key.
        def refreshed_with_new_key() -> bool:
            nonlocal tokens
            tokens = api.refresh(tokens["refresh_token"]).json()
            return kid(tokens["access_token"]) == new_kid

        eventually(refreshed_with_new_key)
        assert api.me(tokens["access_token"]).status_code == 200
        assert verify_with_jwks(server, tokens["access_token"])["sid"] == tokens["session_id"]
        old_token = api.login(api.register())["access_token"]
        assert kid(old_token) == new_kid

        # Once every token the old key signed has expired, the old key leaves the JWKS;
        # the session still goes on.
        eventually(lambda: jwks_kids(server) == [new_kid, newer_next], timeout_seconds=20)
        tokens = api.refresh(tokens["refresh_token"]).json()
        assert api.me(tokens["access_token"]).status_code == 200
    finally:
        api.close()


class CountingJWKClient(jwt.PyJWKClient):
    """PyJWT's JWKS client as a third-party service runs it, counting its real fetches."""

    fetches = 0

    def fetch_data(self) -> Any:
        self.fetches += 1
        return super().fetch_data()


def test_a_verifier_that_cached_the_jwks_verifies_tokens_signed_after_a_rotation(
        server_factory):
    """The next key is published before it signs: a verifier holding the JWKS it fetched
    before ``keys rotate`` knows the key of the tokens signed after it, and never refetches
    (PyJWKClient refetches on an unknown ``kid``)."""
    server = server_factory()
    api = Api(server.base_url)
    verifier = CountingJWKClient(server.base_url + "/.well-known/jwks.json", lifespan=300)

    def verify(token: str) -> dict:
        key = verifier.get_signing_key_from_jwt(token)
        return jwt.decode(token, key, algorithms=["EdDSA"], audience="latchkey-api")

    try:
        _, tokens = api.new_user_session()
        assert verify(tokens["access_token"])["sid"] == tokens["session_id"]
        assert verifier.fetches == 1
        old_kid = kid(tokens["access_token"])

        r = keys_command(server, "rotate")
        assert r.returncode == 0, r.stderr
        tokens = api.refresh(tokens["refresh_token"]).json()
        assert kid(tokens["access_token"]) == r.stdout.strip() != old_kid
        assert verify(tokens["access_token"])["sid"] == tokens["session_id"]
        assert verifier.fetches == 1, "the verifier had to refetch the JWKS"
    finally:
        api.close()


def test_keys_rotate_refuses_keys_supplied_from_a_file(tmp_path, redis_url):
    """An operator-supplied key is rotated by replacing the file; the command says so
    instead of silently generating a key the server would never use."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(FAST_ARGON2, LATCHKEY_INSTANCE_PATH=str(tmp_path / "instance"),
               LATCHKEY_REDIS_URL=redis_url, LATCHKEY_SIGNING_KEY_FILE=str(key_file))
    r = subprocess.run([str(VENV_BIN / "latchkey-server"), "keys", "rotate"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "replacing the file" in r.stderr
    assert "Traceback" not in r.stderr
