"""The peer a Flask team would build instead: Flask-JWT-Extended + a Redis blocklist.

This follows Flask-JWT-Extended's documented "Redis blocklist" pattern: a JWT is accepted
if its signature is valid and its ``jti`` is not in Redis. It checks nothing else — no
idle timeout, no absolute timeout, no session — which is exactly the comparison the
benchmark makes: Latchkey does more per request and should still be faster.

Run under gunicorn: ``PEER_ALG=EdDSA gunicorn 'bench.peer_app:create_app()'``.
"""

from __future__ import annotations

import os

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, create_access_token, jwt_required


def create_app() -> Flask:
    """Build the peer app; algorithm from ``PEER_ALG`` (HS256 or EdDSA)."""
    app = Flask(__name__)
    algorithm = os.environ.get("PEER_ALG", "HS256")
    app.config["JWT_ALGORITHM"] = algorithm
    if algorithm == "EdDSA":
        pem = os.environ["PEER_PRIVATE_KEY_PEM"].encode()
        key = serialization.load_pem_private_key(pem, password=None)
        app.config["JWT_PRIVATE_KEY"] = pem
        app.config["JWT_PUBLIC_KEY"] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        app.config["JWT_SECRET_KEY"] = os.environ["PEER_SECRET"]
    jwt = JWTManager(app)
    blocklist = redis.Redis.from_url(os.environ["PEER_REDIS_URL"], decode_responses=True)

    @jwt.token_in_blocklist_loader
    def check_if_token_is_revoked(jwt_header: dict, jwt_payload: dict) -> bool:
        return blocklist.get(jwt_payload["jti"]) is not None

    @app.get("/protected")
    @jwt_required()
    def protected():  # type: ignore[no-untyped-def]
        return jsonify(hello="world")

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @app.post("/token")
    def token():  # type: ignore[no-untyped-def]
        return jsonify(access_token=create_access_token(identity="bench-user"))

    return app


def new_ed25519_pem() -> str:
    """Return a fresh Ed25519 private key as PKCS#8 PEM."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
