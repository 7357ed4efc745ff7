"""Read untrusted request input into checked values, or raise ``InvalidRequest`` (H1).

Every request body is read and parsed once, here, and cached on the request: the
throttle's key functions, the error handlers and the views all see the same result, and a
body that is refused is refused before any of them acts on it. The steps, in order:

1. Size, before anything is parsed: ``Content-Length`` over ``MAX_BODY_BYTES`` is refused
   by ``hardening.py`` before the view; a chunked body is read here up to the limit and
   one byte more, so one over it is 413 ``payload_too_large`` (werkzeug would silently cut
   it off at the limit, and a parser would then see a truncated document).
2. Encoding: strict UTF-8 (RFC 8259 section 8.1); no BOM, no UTF-16 guessing.
3. Structure, for JSON: nesting bounded (``MAX_JSON_DEPTH``) by a linear scan before the
   parser runs, since Python's parser recurses and a deep document would end in
   ``RecursionError``; duplicate keys refused (the throttle and the view must not read
   different values of one name); ``NaN``/``Infinity`` refused; lone surrogate escapes
   refused (they cannot be stored or logged as UTF-8); the top level must be an object.

A form body (``application/x-www-form-urlencoded``, the OAuth endpoints) goes through the
same steps 1 and 2 in :func:`form_body`, with duplicate names refused (RFC 6749 section 3.1).
Every refusal is a 4xx problem with a stable code and a message that quotes no input.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from flask import Request, request
from latchkey_resource.binding import MAX_DEVICE_FIELD, MAX_USER_AGENT, printable
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import ApiError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["MAX_DEVICE_FIELD", "MAX_FORM_FIELDS", "MAX_JSON_DEPTH", "MAX_USER_AGENT",
           "HardenedRequest", "body_bytes", "client_ip",
           "form_body", "json_body", "json_document", "optional_str", "printable",
           "required_str", "user_agent"]

# MAX_DEVICE_FIELD, MAX_USER_AGENT and printable() are latchkey_resource.binding's: a
# resource server reads a request's binding inputs exactly as the token server does.
# Latchkey's bodies are flat objects; OAuth's are flat forms. Room to spare, and a scan
# that stops early keeps a 16 KiB document of brackets cheap.
MAX_JSON_DEPTH = 16
MAX_FORM_FIELDS = 64

_READ_CHUNK_BYTES = 64 * 1024
# What the depth scan needs to see: an escape (skipped whole, so an escaped quote does not
# end a string), a quote, or a bracket. One left-to-right pass, no backtracking.
_JSON_STRUCTURE = re.compile(r'\\.|["\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_BODY_ATTR = "_latchkey_body"
_JSON_ATTR = "_latchkey_json"


class _Refused(ValueError):
    """A JSON document the hardened parser will not accept; its message names the rule."""


def body_bytes(req: Request | None = None) -> bytes:
    """Return the raw request body, read once and at most ``MAX_BODY_BYTES`` long.

    A body over the limit is 413 however it is framed: werkzeug refuses an oversized
    ``Content-Length`` itself, and a chunked body is read to the limit and one byte more.
    """
    req = req if req is not None else request
    cached = req.__dict__.get(_BODY_ATTR)
    if cached is not None:
        return cached
    limit = req.max_content_length
    chunks: list[bytes] = []
    size = 0
    try:
        stream = req.stream  # werkzeug refuses an oversized Content-Length right here
        while limit is None or size <= limit:
            want = _READ_CHUNK_BYTES if limit is None else min(_READ_CHUNK_BYTES,
                                                               limit + 1 - size)
            chunk = stream.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except RequestEntityTooLarge:
        raise PayloadTooLarge() from None
    if limit is not None and size > limit:
        raise PayloadTooLarge()
    data = b"".join(chunks)
    req.__dict__[_BODY_ATTR] = data
    return data


def _text(data: bytes) -> str:
    """Decode a body as strict UTF-8, the only encoding JSON and forms are read in."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The body is not valid UTF-8") from None


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` without recursing."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # the common case: too few brackets to be too deep, wherever they are
    depth, in_string = 0, False
    for match in _JSON_STRUCTURE.finditer(text):
        part = match.group()
        if part == '"':
            in_string = not in_string
        elif in_string or len(part) == 2:
            continue
        elif part in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise _Refused(f"The body is nested more than {MAX_JSON_DEPTH} levels deep")
        else:
            depth -= 1


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("The body repeats a key")
    return obj


def _no_constants(name: str) -> Any:
    raise _Refused("The body is not valid JSON")  # NaN, Infinity: not JSON (RFC 8259)


def _has_surrogate(value: Any) -> bool:
    """Say whether any string in a parsed document holds a lone surrogate (depth bounded)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _parse_json(data: bytes) -> Any:
    text = _text(data)
    try:
        _check_depth(text)
        document = json.loads(text, object_pairs_hook=_object, parse_constant=_no_constants)
    except _Refused as exc:
        raise InvalidRequest(str(exc)) from None
    except ValueError:  # JSONDecodeError, or an integer past Python's digit limit
        raise InvalidRequest("The body is not valid JSON") from None
    # Strict UTF-8 cannot carry a surrogate, so only a \u escape can make one.
    if "\\u" in text and _has_surrogate(document):
        raise InvalidRequest("The body holds a lone surrogate escape")
    return document


def json_document(req: Request | None = None) -> Any:
    """Return the request's JSON document (``None`` for an empty body), parsed once.

    The outcome, a document or the error refusing it, is cached on the request, so the
    limiter, the error handlers and the view never parse twice or disagree.
    """
    req = req if req is not None else request
    cached = req.__dict__.get(_JSON_ATTR)
    if cached is None:
        try:
            data = body_bytes(req)
            cached = (_parse_json(data) if data else None, None)
        except ApiError as exc:
            cached = (None, exc)
        req.__dict__[_JSON_ATTR] = cached
    document, error = cached
    if error is not None:
        raise error
    return document


def json_body(required: bool = True) -> dict[str, Any]:
    """Return the request's JSON object; an empty body is ``{}`` when not required."""
    document = json_document()
    if document is None:
        if required:
            raise InvalidRequest("A JSON object body is required")
        return {}
    if not isinstance(document, dict):
        raise InvalidRequest("The body must be a JSON object")
    return document


def form_body() -> dict[str, str]:
    """Return an ``application/x-www-form-urlencoded`` body as a dict, read like JSON bodies.

    Same size limit and strict UTF-8; at most ``MAX_FORM_FIELDS`` fields; a name sent
    twice is refused (RFC 6749 section 3.1: parameters must not be repeated).
    """
    text = _text(body_bytes())
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The body is not a valid form") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InvalidRequest("The body repeats a parameter")
    if any(_SURROGATE.search(k) or _SURROGATE.search(v) for k, v in fields.items()):
        raise InvalidRequest("The body is not valid UTF-8")
    return fields


class HardenedRequest(Request):
    """Flask's request whose ``get_json`` is :func:`json_document`: one parser for all.

    Code that asks Flask for the JSON (``request.get_json``, ``request.json``), in
    Latchkey or in an extension, gets the hardened, cached parse; ``silent`` hides a
    malformed document but never an oversized body, which is 413 whoever reads it.
    """

    def get_json(self, force: bool = False, silent: bool = False,
                 cache: bool = True) -> Any:
        if not (force or self.is_json):
            if silent:
                return None
            raise UnsupportedMediaType()
        try:
            return json_document(self)
        except PayloadTooLarge:
            raise
        except ApiError:
            if silent:
                return None
            raise


def required_str(body: dict[str, Any], name: str, *, max_length: int = 1024) -> str:
    """Return a required string field, checked for type and length."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string", extra={"field": name})
    if len(value) > max_length:
        raise InvalidRequest(f"'{name}' is too long", extra={"field": name})
    return value


def optional_str(body: dict[str, Any], name: str, *, max_length: int = MAX_DEVICE_FIELD) -> str:
    """Return an optional display string field, cleaned ('' when absent)."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidRequest(
            f"'{name}' must be a string of at most {max_length} characters",
            extra={"field": name},
        )
    return printable(value)


def user_agent() -> str:
    """Return the client's User-Agent, bounded and printable."""
    return printable(request.headers.get("User-Agent", "")[:MAX_USER_AGENT])


def client_ip() -> str:
    """Return the client address (ProxyFix has applied trusted X-Forwarded-For)."""
    return request.remote_addr or ""
