"""Keep tokens on the wire where they belong: TLS, the right origin, never a URL.

Three guards (X2, S2, R4): a plain ``http://`` base URL (or API origin) is refused unless it
is loopback (a development server on the same device); a request URL that carries a
token-like query parameter is refused before it is sent; and the session goes only to the
origins :class:`TokenOrigins` names, the Latchkey server's and the app's ``api_origins``,
redirects included. SPKI pinning (:func:`pinned_ssl_context`) checks the server's
public key during the TLS handshake, before a single request byte, so a token is never
written to a connection that failed the pin.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Iterable
from typing import Any

import httpx

from .errors import ConfigurationError, InsecureRequestError, PinningError

__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_DEVICE_ID_LENGTH",
    "SESSION_HEADERS",
    "TOKEN_QUERY_PARAMS",
    "TokenOrigins",
    "check_api_origin",
    "check_base_url",
    "check_device_id",
    "check_request_url",
    "check_user_agent",
    "pinned_ssl_context",
    "same_origin",
    "spki_sha256",
]

#: Query parameter names the server treats as a token in a URL (API.md, "Conventions").
TOKEN_QUERY_PARAMS = frozenset(
    {"access_token", "refresh_token", "token", "id_token", "jwt", "session", "session_id", "sid"}
)

#: The longest device id the server keeps (``latchkey_server.api.inputs.MAX_DEVICE_FIELD``).
MAX_DEVICE_ID_LENGTH = 128
#: What a device id is: the server's rule, character for character
#: (``latchkey_server.binding.DEVICE_ID_PATTERN``; ``tests/sdk/test_e2e_hardening.py``
#: proves the two are the same). Printable ASCII with no space at either end, because it
#: travels in a header.
DEVICE_ID_PATTERN = rf"^(?:[!-~](?:[ -~]{{0,{MAX_DEVICE_ID_LENGTH - 2}}}[!-~])?)?$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."} or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str | httpx.URL) -> httpx.URL:
    """Return the base URL, or raise ``ConfigurationError`` if it could leak tokens.

    Only ``https://`` anywhere, or ``http://`` to a loopback host. No userinfo (it would be
    sent as Basic credentials) and no query string (tokens must not ride on URLs).
    """
    url = httpx.URL(str(base_url))
    if url.scheme not in {"https", "http"} or not url.host:
        raise ConfigurationError("base_url must be an absolute https:// URL")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ConfigurationError(
            "refusing plain http:// to a non-loopback host: tokens would travel unencrypted"
        )
    if url.userinfo:
        raise ConfigurationError("base_url must not carry credentials")
    if url.query:
        raise ConfigurationError("base_url must not carry a query string")
    path = url.path if url.path.endswith("/") else url.path + "/"
    return url.copy_with(path=path, fragment=None)


def check_device_id(device_id: str | None) -> str | None:
    """Return ``device_id``, or raise ``ConfigurationError`` if the server would refuse it.

    Checked when the client is built, with the server's own rule: the id is sent as the
    ``X-Device-Id`` header on every request, and a header cannot carry "Téléphone-1", so a
    bad id is a clear configuration error here rather than an encoding crash or a session
    the server ends for a changed binding later.
    """
    if device_id is None:
        return None
    if not isinstance(device_id, str) or not _DEVICE_ID_RE.fullmatch(device_id):
        raise ConfigurationError(
            "device_id must be printable ASCII (space to '~'), at most "
            f"{MAX_DEVICE_ID_LENGTH} characters: it is sent in the X-Device-Id header "
            "(put display text such as the phone's name in device_name)"
        )
    return device_id


def check_user_agent(user_agent: str | None) -> str | None:
    """Return ``user_agent``, or raise ``ConfigurationError`` if no header can carry it.

    The same trap as a device id: a non-ASCII or padded value would crash every request.
    """
    if user_agent is None:
        return None
    if (not isinstance(user_agent, str) or not user_agent.isascii()
            or not user_agent.isprintable() or user_agent != user_agent.strip()):
        raise ConfigurationError(
            "user_agent must be printable ASCII without leading or trailing spaces"
        )
    return user_agent


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Say whether two URLs share scheme, host and port (default ports made explicit)."""
    return (a.scheme, a.host.lower(), a.port or _default_port(a)) == (
        b.scheme,
        b.host.lower(),
        b.port or _default_port(b),
    )


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


# -- where the session may go (R4) -----------------------------------------------------------

#: The request headers that carry the session or name the device it is bound to: none of
#: them may reach an origin the app did not name (a redirect's target included).
SESSION_HEADERS = ("Authorization", "DPoP", "X-Device-Id")

_Origin = tuple[str, str, int]


def _origin_of(url: httpx.URL) -> _Origin:
    return url.scheme, url.host.lower(), url.port or _default_port(url)


def _show(origin: _Origin) -> str:
    scheme, host, port = origin
    netloc = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{netloc}" if port == default else f"{scheme}://{netloc}:{port}"


def check_api_origin(origin: str) -> httpx.URL:
    """Return ``origin`` as a URL, or raise ``ConfigurationError`` if it is not exactly one.

    An API origin is ``scheme://host[:port]`` and nothing else: the access token goes to
    every path on it, so a path would promise a narrowing the SDK does not make, and a
    wildcard, userinfo or query has no single meaning. ``https`` only, except loopback (the
    base URL's rule: a token must not travel unencrypted over a network).
    """
    if not isinstance(origin, str):
        raise ConfigurationError("each of api_origins is a string such as "
                                 "'https://api.example.com'")
    if "*" in origin:
        raise ConfigurationError(
            f"api_origins: {origin!r} has a wildcard; name each origin exactly "
            "(scheme://host[:port])")
    try:
        url = httpx.URL(origin)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"api_origins: {origin!r} is not a URL") from exc
    if url.scheme not in {"https", "http"} or not url.host:
        raise ConfigurationError(
            f"api_origins: {origin!r} must be an absolute https:// origin "
            "(scheme://host[:port])")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ConfigurationError(
            f"api_origins: refusing plain http:// to the non-loopback host in {origin!r}: "
            "the access token would travel unencrypted")
    if url.userinfo:
        raise ConfigurationError(f"api_origins: {origin!r} must not carry credentials")
    if url.path not in {"", "/"} or url.query or url.fragment:
        raise ConfigurationError(
            f"api_origins: {origin!r} has a path, query or fragment; an origin is only "
            "scheme://host[:port] (the token goes to every path on it)")
    return url


class TokenOrigins:
    """Say where the session may go: the Latchkey server's origin and the app's API origins.

    The one place that decides it (R4). The auth flow attaches the access token only to a
    request whose origin this allows and acts only on answers from one; the clients refuse
    to send anything elsewhere and strip :data:`SESSION_HEADERS` from any request (a
    redirect's) that would leave these origins.
    """

    def __init__(self, base_url: httpx.URL, api_origins: Iterable[str] = ()) -> None:
        if isinstance(api_origins, str | bytes):
            raise ConfigurationError(
                "api_origins is a list of origins: write api_origins=[...] even for one")
        self._base = _origin_of(base_url)
        self._api = tuple(dict.fromkeys(_origin_of(check_api_origin(o)) for o in api_origins))
        self._allowed = frozenset((self._base, *self._api))

    def __repr__(self) -> str:
        return f"TokenOrigins({_show(self._base)!r}, api_origins={self.api_origins!r})"

    @property
    def api_origins(self) -> tuple[str, ...]:
        """The app's API origins, normalised (``scheme://host[:port]``, default port left out)."""
        return tuple(_show(o) for o in self._api)

    def allows(self, url: httpx.URL) -> bool:
        """Say whether the session may go to ``url``'s origin (exact scheme, host and port)."""
        return _origin_of(url) in self._allowed

    def check(self, url: httpx.URL) -> None:
        """Raise ``InsecureRequestError`` unless the session may go to ``url``'s origin."""
        if not self.allows(url):
            raise InsecureRequestError(
                f"refusing to send a request to {_show(_origin_of(url))}: it is neither the "
                "Latchkey server nor one of api_origins")

    def strip_if_foreign(self, request: httpx.Request) -> None:
        """Remove the session's headers from ``request`` unless its origin is allowed.

        Run on every request the SDK's HTTP client sends, redirects included: httpx drops
        ``Authorization`` on a cross-origin redirect except an ``http`` to ``https`` upgrade
        of the same host, and keeps every other header (``DPoP``, ``X-Device-Id``).
        """
        if not self.allows(request.url):
            for name in SESSION_HEADERS:
                request.headers.pop(name, None)


def check_request_url(url: httpx.URL) -> None:
    """Raise ``InsecureRequestError`` if ``url`` carries a token-like query parameter.

    The parameter's *name* decides, not its value: the server revokes a session whose token
    it finds in a URL, and a proxy or access log has already kept a copy by then.
    """
    if not url.query:
        return
    for name in url.params:
        if name.lower() in TOKEN_QUERY_PARAMS:
            raise InsecureRequestError(
                f"refusing to send a request with the query parameter {name!r}: "
                "tokens never go in URLs"
            )


# -- SPKI pinning ----------------------------------------------------------------------------


def _der_read(data: bytes, offset: int) -> tuple[int, int, int]:
    """Return ``(tag, content_start, content_end)`` of the DER element at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def spki_sha256(cert_der: bytes) -> str:
    """Return base64(sha256(SubjectPublicKeyInfo)) of a DER certificate, as HPKP defined it.

    A few lines of DER walking instead of a dependency: Certificate → tbsCertificate →
    skip [0] version, serial, signature, issuer, validity, subject → subjectPublicKeyInfo.
    """
    try:
        _, cert_start, _ = _der_read(cert_der, 0)
        _, tbs_start, _ = _der_read(cert_der, cert_start)
        pos = tbs_start
        tag, _, end = _der_read(cert_der, pos)
        if tag == 0xA0:  # explicit version
            pos = end
        for _ in range(5):  # serial, signature algorithm, issuer, validity, subject
            _, _, pos = _der_read(cert_der, pos)
        tag, _, end = _der_read(cert_der, pos)
        if tag != 0x30:
            raise ValueError("subjectPublicKeyInfo is not a SEQUENCE")
        spki = cert_der[pos:end]
    except (IndexError, ValueError) as exc:
        raise PinningError("could not read the server certificate's public key") from exc
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def _normalise_pins(pins: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for pin in pins:
        value = pin.removeprefix("sha256/").strip()
        try:
            if len(base64.b64decode(value, validate=True)) != 32:
                raise ValueError
        except ValueError as exc:
            raise ConfigurationError("a pin is base64 of a SHA-256 digest") from exc
        out.add(value)
    if not out:
        raise ConfigurationError("pinning needs at least one pin (add a backup pin too)")
    return frozenset(out)


def _check_pin(peer_der: bytes | None, pins: frozenset[str]) -> None:
    if peer_der is None or spki_sha256(peer_der) not in pins:
        raise PinningError("the server's public key does not match any pinned key")


def pinned_ssl_context(
    pins: Iterable[str], *, verify: bool | str | ssl.SSLContext = True
) -> ssl.SSLContext:
    """Return an SSL context that also requires the server's SPKI hash to be one of ``pins``.

    Pins are ``base64(sha256(SPKI))``, optionally prefixed ``sha256/``; ship at least one
    backup pin for key rotation. Normal certificate verification still happens; the pin is
    checked right after the handshake, for the sync client (``SSLSocket``) and the async one
    (``SSLObject``), so a mismatch fails the connection before any request is written.
    """
    wanted = _normalise_pins(pins)
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif isinstance(verify, str):
        ctx = ssl.create_default_context(cafile=verify)
    elif verify:
        ctx = ssl.create_default_context()
    else:
        raise ConfigurationError("pinning on top of verify=False makes no sense")

    class _PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, *args: Any, **kwargs: Any) -> None:
            super().do_handshake(*args, **kwargs)
            try:
                _check_pin(self.getpeercert(binary_form=True), wanted)
            except PinningError:
                self.close()
                raise

    class _PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is done
            _check_pin(self.getpeercert(binary_form=True), wanted)

    ctx.sslsocket_class = _PinnedSocket
    ctx.sslobject_class = _PinnedObject
    return ctx
