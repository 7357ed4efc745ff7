"""Mask anything token-shaped before it reaches a log.

The SDK itself never logs a token; this filter is the belt to those braces, and it is meant
for the app's own logging too (a Kivy app that logs a response body at DEBUG would otherwise
write a refresh token to a file on the phone).

Put the filter on *handlers*: a filter on a logger sees only records logged on that very
logger, not those propagated from children such as ``httpx``. :func:`install_redaction` does
that for every handler of a logger (the root logger by default).
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "TokenRedactingFilter", "install_redaction", "redact"]

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values of any scheme we might carry.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JSON or form fields whose value is a secret, whatever the value looks like.
    (
        re.compile(
            r"""(?i)(["']?(?:access_token|refresh_token|id_token|password|current_password|"""
            r"""new_password)["']?\s*[:=]\s*["']?)[^"'\s,&}]+"""
        ),
        r"\1" + REDACTED,
    ),
    # A JWT: base64url JSON header and payload ("eyJ" is '{"' encoded), then a signature.
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.ey[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
    # A Latchkey refresh token: lkr_ + 102 base64url characters (truncated ones too).
    (re.compile(r"lkr_[A-Za-z0-9_-]{16,}"), REDACTED),
    # The session id in a URL (``DELETE /v1/auth/sessions/{id}``, which httpx logs at INFO)
    # and in a JSON body: it grants nothing, but like the server we keep it out of logs.
    (re.compile(r"(/sessions/)[^/?#\s\"']+"), r"\1" + REDACTED),
    (re.compile(r"""(?i)(["']?session_id["']?\s*[:=]\s*["']?)[^"'\s,&}]+"""),
     r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """Return ``text`` with every token-shaped substring replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class TokenRedactingFilter(logging.Filter):
    """A logging filter that rewrites each record so no token survives in it.

    It formats the message with its arguments first (a token passed as ``%s`` argument is
    still a token), and pre-renders any traceback so the handler prints the masked copy.
    It never drops a record: losing a log line to hide a secret would hide the incident too.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place and keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> TokenRedactingFilter:
    """Add one :class:`TokenRedactingFilter` to every handler of ``logger`` (default: root).

    Handlers added later are not covered; call again after configuring logging.
    """
    target = logger if logger is not None else logging.getLogger()
    flt = TokenRedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, TokenRedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
