"""Parse an OAuth endpoint's form body once, strictly, or refuse it as ``invalid_request``.

RFC 6749 section 3.2 (and RFC 7009 section 2.1, RFC 7662 section 2.1): parameters arrive
``application/x-www-form-urlencoded`` in the body, and none may appear twice. This is the
OAuth counterpart of ``api/inputs.py``'s JSON parsing with the same limits: the body is at
most ``MAX_BODY_BYTES`` (``hardening.py`` has refused a longer one with 413 before any
parsing), at most ``MAX_FIELDS`` parameters, each value at most ``MAX_VALUE_LENGTH``
characters, and the parameters an endpoint reads (``PARAMETERS``) UTF-8 without control
characters. Anything else is a 400 in the section 5.2 shape, never a 500: bad
percent-escapes, invalid UTF-8, a lone surrogate (strict UTF-8 cannot produce one), NUL
bytes, a repeated parameter. Unrecognised parameters are ignored, as section 3.1 requires
("MUST ignore unrecognized request parameters"), and left out of the result.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from flask import request

from ..tokens import AccessClaims, RefreshToken, TokenService
from .errors import InvalidRequestError

__all__ = ["FORM_MIMETYPE", "MAX_FIELDS", "MAX_VALUE_LENGTH", "PARAMETERS", "read_form",
           "token_parameter"]

FORM_MIMETYPE = "application/x-www-form-urlencoded"
# More than any OAuth request here needs (grant_type, refresh_token, client_id,
# client_secret, token, token_type_hint, scope): a bound on parsing work, not a schema.
MAX_FIELDS = 16
# A refresh token is 106 characters, an access token under 2 KiB
# (latchkey_resource.claims.MAX_JWT_LENGTH).
MAX_VALUE_LENGTH = 4096
# Every parameter the three endpoints read; anything else is ignored (section 3.1).
PARAMETERS = frozenset({"grant_type", "refresh_token", "scope", "client_id",
                        "client_secret", "token", "token_type_hint"})


def read_form() -> dict[str, str]:
    """Return the request's form parameters, each once, or raise ``InvalidRequestError``."""
    if request.mimetype != FORM_MIMETYPE:
        raise InvalidRequestError(description=f"Send the parameters as {FORM_MIMETYPE}")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise InvalidRequestError(description="The form must be UTF-8")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("ascii")  # a form body is percent-encoded ASCII
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError(description="The form body is malformed") from exc
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:  # section 3.1: no parameter may be included more than once
            raise InvalidRequestError(description=f"Repeated parameter: {_shown(name)}")
        seen.add(name)
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidRequestError(description=f"Parameter too long: {_shown(name)}")
        if name not in PARAMETERS:
            continue
        if not value.isprintable():
            raise InvalidRequestError(description=f"Invalid parameter: {_shown(name)}")
        form[name] = value
    return form


def token_parameter(form: dict[str, str], tokens: TokenService, *,
                    allow_expired: bool) -> RefreshToken | AccessClaims:
    """Return the ``token`` parameter of RFC 7009 and RFC 7662, parsed and checked.

    It is REQUIRED (``invalid_request`` without it). ``token_type_hint`` is OPTIONAL and
    the server must search every token type anyway, so it changes nothing: a Latchkey
    token's shape already says which kind it is. A malformed, forged or (unless
    ``allow_expired``) expired token raises the session service's 401 error, which the
    caller turns into its RFC's answer for an invalid token.
    """
    value = form.get("token")
    if not value:
        raise InvalidRequestError(description="Missing token")
    if value.startswith("lkr_"):
        return RefreshToken.parse(value)
    return tokens.verify_access_token(value, allow_expired=allow_expired)


def _shown(name: str) -> str:
    """Return a parameter name safe to echo in an error description (printable ASCII)."""
    safe = "".join(ch for ch in name[:40] if (ch.isascii() and ch.isalnum()) or ch in "_-.")
    return safe or "?"
