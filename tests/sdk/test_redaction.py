"""The logging filter masks anything token-shaped, whatever logged it (D1, S1)."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets

from latchkey_client import TokenRedactingFilter, install_redaction, redact


def fake_jwt() -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    sig = base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
    return f"{part({'alg': 'EdDSA', 'kid': 'k1'})}.{part({'sub': 'x', 'sid': 'y'})}.{sig}"


def fake_refresh() -> str:
    token = "lkr_" + base64.urlsafe_b64encode(secrets.token_bytes(76)).rstrip(b"=").decode()
    assert len(token) == 4 + 102
    return token


def test_redact_masks_jwts_refresh_tokens_and_bearer_headers() -> None:
    jwt, refresh = fake_jwt(), fake_refresh()
    text = f"got {jwt} and {refresh}; header Authorization: Bearer abc.def-ghi"
    out = redact(text)
    assert jwt not in out and refresh not in out and "abc.def-ghi" not in out
    assert out.count("[REDACTED]") == 3


def test_redact_masks_secret_fields_in_json_and_forms() -> None:
    body = json.dumps({"refresh_token": "opaque-value-1", "password": "hunter2hunter2"})
    out = redact(body + " access_token=opaque-value-2&x=1")
    for secret in ("opaque-value-1", "hunter2hunter2", "opaque-value-2"):
        assert secret not in out
    assert "x=1" in out


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "GET /v1/me 200 in 3.1 ms for session hash 9f2c"
    assert redact(text) == text


def test_filter_masks_arguments_and_tracebacks() -> None:
    jwt, refresh = fake_jwt(), fake_refresh()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TokenRedactingFilter())
    logger = logging.getLogger("test.redaction.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s", jwt)
        try:
            raise ValueError(f"bad {refresh}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert jwt not in out and refresh not in out
    assert "ValueError" in out and "[REDACTED]" in out


def test_install_redaction_covers_records_propagated_from_child_loggers() -> None:
    refresh = fake_refresh()
    stream = io.StringIO()
    parent = logging.getLogger("test.redaction.parent")
    parent.addHandler(logging.StreamHandler(stream))
    parent.propagate = False
    install_redaction(parent)
    install_redaction(parent)  # idempotent
    logging.getLogger("test.redaction.parent.child").warning("leak %s", refresh)
    assert refresh not in stream.getvalue()
    assert len(parent.handlers[0].filters) == 1
