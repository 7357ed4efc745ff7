"""Fetch the issuer's signing keys (its JWKS) over HTTP and hold them, by ``kid``.

Keys come from one place only, the issuer's ``jwks_uri`` (from its RFC 8414 metadata, or
``<issuer>/.well-known/jwks.json``, or given): never from a token's ``jku``/``x5u``/``jwk``
header (``claims.py`` refuses those). Only Ed25519 keys are taken, the one kind the server
signs with.

- The document is held for its ``Cache-Control: max-age`` (the server sends 300 s; held
  between ``min_max_age_seconds`` and ``max_max_age_seconds``) and fetched again on the
  first use after that: a withdrawn key, gone from the JWKS, stops verifying then.
- An unknown ``kid`` fetches it again at once, but unknown ``kid``s cause at most one
  fetch per ``refetch_interval_seconds`` (10 s), so a flood of made-up ``kid``s costs the
  issuer one request per interval, not one per token. The server publishes its next key before it
  signs with it, so a rotation never needs that fetch.
- A fetch that fails keeps the keys held (a stale document is better than none while the
  issuer is down); with nothing held, verification cannot proceed: ``KeysUnavailable``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["JwksCache", "KeysUnavailable", "check_url"]

_log = logging.getLogger("latchkey_resource.jwks")

METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/.well-known/jwks.json"
MAX_DOCUMENT_BYTES = 256 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched and none are held."""


def check_url(url: str, what: str) -> str:
    """Return ``url`` if it is absolute https (http only on loopback), else raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL, not {url!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError(f"{what} must use https (http only on a loopback host): {url!r}")
    return url


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ed25519_keys(document: Any) -> dict[str, Ed25519PublicKey]:
    """Return the Ed25519 signing keys of a JWKS document, by ``kid``; skip any other."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if (jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519"
                or jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig"
                or not isinstance(kid, str) or not kid or not isinstance(x, str)):
            continue
        try:
            raw = _b64decode(x)
            if len(raw) != 32:
                continue
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            continue
    return keys


class JwksCache:
    """The issuer's Ed25519 keys by ``kid``, fetched and refreshed as the docstring says."""

    def __init__(self, issuer: str, http: httpx.Client, *, jwks_uri: str | None = None,
                 refetch_interval_seconds: float = 10.0, min_max_age_seconds: float = 30.0,
                 max_max_age_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._issuer = issuer
        self._http = http
        self._jwks_uri = check_url(jwks_uri, "jwks_uri") if jwks_uri else None
        self._refetch_interval = refetch_interval_seconds
        self._max_age_bounds = (min_max_age_seconds, max_max_age_seconds)
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None  # last success
        self._attempted_at: float | None = None  # last attempt, success or not
        self._unknown_fetch_at: float | None = None  # last fetch an unknown kid caused
        self._last_failed = False
        self._max_age = 300.0
        self._lock = threading.Lock()
        self.fetches = 0  # attempts made: for tests and metrics

    # -- what verifiers ask ------------------------------------------------------------
    def key(self, kid: str) -> Ed25519PublicKey | None:
        """Return the key ``kid`` names, fetching the JWKS if it is stale or the ``kid``
        unknown (rate-limited); ``None`` if the issuer does not publish it.

        Raise ``KeysUnavailable`` when no document is held and none can be fetched, or when
        the ``kid`` is unknown and the last fetch failed (the key may be a new one).
        """
        self._refresh_if_stale()
        found = self._keys.get(kid)
        if found is not None:
            return found
        self._fetch_for_unknown_kid()
        found = self._keys.get(kid)
        if found is None and (self._fetched_at is None or self._last_failed):
            raise KeysUnavailable(f"the issuer's JWKS could not be fetched ({kid!r} unknown)")
        return found

    def still_published(self, kid: str) -> bool:
        """Say whether ``kid`` is still in the JWKS held (fetching it again when stale):
        what a cached signature result asks on every use."""
        self._refresh_if_stale()
        return kid in self._keys

    def refresh(self) -> None:
        """Fetch the JWKS now (start-up, or an operator's hook after a key withdrawal)."""
        with self._lock:
            self._fetch()

    # -- fetching ----------------------------------------------------------------------
    def _refresh_if_stale(self) -> None:
        """Fetch when nothing is held or what is held is past its max-age; after a failed
        attempt, wait ``refetch_interval_seconds`` before the next (an issuer that is down
        is not asked on every request)."""
        fetched = self._fetched_at
        if fetched is None or self._clock() - fetched >= self._max_age:
            if fetched is None and self._attempted_at is not None and self._last_failed:
                if self._clock() - self._attempted_at < self._refetch_interval:
                    raise KeysUnavailable("the issuer's JWKS could not be fetched")
            self._fetch_if_due(force_after=self._refetch_interval if self._last_failed
                               else 0.0)

    def _fetch_for_unknown_kid(self) -> None:
        """Fetch for an unknown ``kid`` unless another unknown ``kid`` did within the
        interval: a regular fetch does not count, so a key newer than the document held
        is found at once, while a flood of made-up ones costs one fetch per interval."""
        last = self._unknown_fetch_at
        if last is not None and self._clock() - last < self._refetch_interval:
            return
        with self._lock:
            last = self._unknown_fetch_at
            if last is not None and self._clock() - last < self._refetch_interval:
                return
            self._unknown_fetch_at = self._clock()
            self._fetch()

    def _fetch_if_due(self, *, force_after: float) -> None:
        """Fetch unless another attempt was made within ``force_after`` seconds."""
        attempted = self._attempted_at
        if attempted is not None and self._clock() - attempted < force_after:
            return
        with self._lock:
            # Another thread may have fetched while this one waited for the lock.
            attempted = self._attempted_at
            if attempted is not None and self._clock() - attempted < force_after:
                return
            self._fetch()

    def _fetch(self) -> None:
        """Fetch and replace the keys held; on failure keep them and note the failure."""
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            keys, max_age = self._download()
        except (httpx.HTTPError, ValueError) as exc:
            self._last_failed = True
            _log.warning("JWKS fetch failed; keeping the %d keys held", len(self._keys),
                         extra={"event": "jwks_fetch_failed", "lk_error": type(exc).__name__,
                                "lk_detail": str(exc)[:200]})
            if self._fetched_at is None:
                raise KeysUnavailable(str(exc)) from exc
            return
        self._keys, self._max_age = keys, max_age
        self._fetched_at, self._last_failed = self._clock(), False

    def _download(self) -> tuple[dict[str, Ed25519PublicKey], float]:
        uri = self._jwks_uri or self._discover()
        response = self._get(uri)
        keys = _ed25519_keys(response.json())
        low, high = self._max_age_bounds
        match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
        max_age = float(match.group(1)) if match else 300.0
        return keys, min(max(max_age, low), high)

    def _discover(self) -> str:
        """Return the ``jwks_uri`` of the issuer's RFC 8414 metadata (or the default path).

        RFC 8414 section 3.3: the metadata's ``issuer`` must be the issuer asked about.
        """
        try:
            metadata = self._get(self._issuer + METADATA_PATH).json()
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            uri = self._issuer + JWKS_PATH
        else:
            if not isinstance(metadata, dict) or metadata.get("issuer") != self._issuer:
                raise ValueError("the issuer's metadata names another issuer")
            uri = metadata.get("jwks_uri") or self._issuer + JWKS_PATH
            if not isinstance(uri, str):
                raise ValueError("the issuer's metadata has no usable jwks_uri")
        self._jwks_uri = check_url(uri, "jwks_uri")
        return self._jwks_uri

    def _get(self, url: str) -> httpx.Response:
        """GET one document: no redirects followed, a bounded size, JSON expected."""
        response = self._http.get(url, follow_redirects=False,
                                  headers={"Accept": "application/json"})
        response.raise_for_status()
        if response.status_code != 200:
            raise ValueError(f"{url} answered {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return response
