"""Mask anything token-shaped before it can reach a log line (defence in depth for D1).

The server never logs tokens on purpose; this filter catches what slips through anyway:
a token in a URL the access log would print, an exception message quoting input. It is
installed on every handler the server configures, including the access logs.
"""

from __future__ import annotations

import functools
import logging
import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode

from .tokens import session_ids_in

__all__ = ["REDACTED", "TOKEN_QUERY_PARAMS", "RedactingFilter", "redact", "redact_path",
           "url_decoded"]

REDACTED = "[redacted]"

# Query parameters that carry tokens (API.md, Conventions); matched without regard to case.
TOKEN_QUERY_PARAMS = frozenset(
    {"access_token", "refresh_token", "token", "id_token", "jwt", "session", "session_id", "sid"}
)

_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"lkr_[A-Za-z0-9_-]{20,}"),  # refresh token
    re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"),  # Authorization header value
)
# What every pattern above starts with. Almost no line holds any of them, and one search
# for the three is far cheaper than three substitutions: ``redact`` runs on every field of
# every log line (the access log writes one per request).
_ANY_TOKEN_START = re.compile(r"eyJ|lkr_|(?i:bearer)")


def redact(text: str) -> str:
    """Return ``text`` with every token-shaped substring replaced."""
    if _ANY_TOKEN_START.search(text) is None:
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(
            lambda m: (m.group(1) if m.groups() else "") + REDACTED, text
        )
    return text


# The one path that carries an identifier: ``DELETE /v1/auth/sessions/{session_id}``. A
# session id is random, not token-shaped, so ``redact`` would let it through (API.md: it is
# kept out of logs).
_SESSION_ID_SEGMENT = re.compile(r"(/sessions/)[^/?#]+")
# Decoding rounds for a URL: a token encoded twice is as leaked as one encoded once (any
# reader of a log can decode it); the bound keeps the work per request small (H2).
_DECODE_ROUNDS = 3


def url_decoded(text: str, *, plus: bool = False) -> str:
    """Return a path or query percent-decoded until it is stable (``plus``: ``+`` is a space).

    The token-in-URL check (``hardening.py``) scans, and the access log masks, this form.
    """
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(text) if plus else unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _redact_url_part(text: str) -> str:
    """Mask tokens and stand-alone session ids (refused as ``token_in_url``, X1) in a
    decoded path or query name."""
    text = redact(url_decoded(text))
    for session_id in session_ids_in(text):
        text = text.replace(session_id, REDACTED)
    return text


# Paths this short are remembered: a server sees a handful of them over and over, and
# masking decodes and scans each one (~10 µs). Longer ones are computed every time, so a
# client cannot fill the cache with large entries.
_CACHED_PATH_LENGTH = 256


def redact_path(path: str, query: str = "") -> str:
    """Return a path for an access log: token-shaped segments masked, query values dropped.

    Query *names* are kept (useful to see a ``token_in_url`` attempt), values never are;
    the session id segment of ``/v1/auth/sessions/{session_id}`` is masked.
    """
    if len(path) + len(query) <= _CACHED_PATH_LENGTH:
        return _redact_path_cached(path, query)
    return _redact_path(path, query)


def _redact_path(path: str, query: str) -> str:
    safe = _SESSION_ID_SEGMENT.sub(lambda m: m.group(1) + REDACTED, _redact_url_part(path))
    if not query:
        return safe
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return (safe + "?" + urlencode([(_redact_url_part(n), REDACTED) for n in names])
            if names else safe)


_redact_path_cached = functools.lru_cache(maxsize=512)(_redact_path)


class RedactingFilter(logging.Filter):
    """A logging filter that masks tokens in the message, its args and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        fields = record.__dict__
        for key in [key for key in fields if key[:3] == "lk_"]:
            value = fields[key]
            if isinstance(value, str):
                fields[key] = redact(value)
        return True
