"""Read a request's DPoP proof (RFC 9449) and hold the server's DPoP policy.

The checks themselves are ``latchkey_resource.dpop``'s (the same code every resource server
runs); this module adds what only the token server knows: the public URL a request was
sent to, derived from ``LATCHKEY_ISSUER`` (behind a proxy the request's own ``Host`` is not
trusted), the ``LATCHKEY_DPOP`` mode, the iat window and the nonces. The outcome is a
checked :class:`~latchkey_resource.dpop.Proof` or a typed error (``errors.py``); what a
proof then does to a session (bind it, prove it, use up its ``jti``) is the session
service's, in the one script the request runs.
"""

from __future__ import annotations

import time

from flask import Flask, Response, request
from latchkey_resource.dpop import (
    DPOP_ALGORITHMS,
    USE_DPOP_NONCE,
    DPoPError,
    NonceSource,
    Proof,
    verify_proof,
)

from .config import Settings
from .errors import InvalidDPoPProof, UseDPoPNonce

__all__ = ["DPOP_HEADER", "NONCE_HEADER", "DPoPPolicy", "init_app"]

DPOP_HEADER = "DPoP"
NONCE_HEADER = "DPoP-Nonce"


class DPoPPolicy:
    """Check proofs of token requests and of protected requests under the settings."""

    def __init__(self, settings: Settings, nonce_secret: bytes) -> None:
        self._settings = settings
        self._nonces = (NonceSource(nonce_secret,
                                    period_seconds=settings.dpop_nonce_period_seconds)
                        if settings.dpop_nonce == "on" else None)

    @property
    def enabled(self) -> bool:
        """Say whether proofs are read at all (``LATCHKEY_DPOP`` is not ``off``)."""
        return self._settings.dpop != "off"

    @property
    def algorithms(self) -> list[str]:
        """Return the proof algorithms accepted (RFC 8414 metadata), none when off."""
        return list(DPOP_ALGORITHMS) if self.enabled else []

    def current_nonce(self) -> str | None:
        """Return the nonce to hand out now, or ``None`` when nonces are off."""
        return self._nonces.current(time.time()) if self._nonces else None

    def token_request(self) -> Proof | None:
        """Check a token request's proof (login, refresh, reauth, password change,
        ``/oauth/token``); return it, or ``None`` without one where that is allowed.

        Under ``required`` a token request without a proof is ``invalid_dpop_proof``;
        under ``off`` any proof is ignored.
        """
        if not self.enabled:
            return None
        values = request.headers.getlist(DPOP_HEADER)
        if not values:
            if self._settings.dpop == "required":
                raise InvalidDPoPProof("This server requires a DPoP proof on token requests")
            return None
        return self._check(values, access_token=None, resource=False)

    def resource_request(self, access_token: str) -> Proof:
        """Check the proof of a protected request sent with ``Authorization: DPoP``:
        it must exist and carry ``ath`` for ``access_token`` (RFC 9449 section 7.1)."""
        return self._check(request.headers.getlist(DPOP_HEADER), access_token=access_token,
                           resource=True)

    def _check(self, values: list[str], *, access_token: str | None,
               resource: bool) -> Proof:
        now = time.time()
        nonces = self._nonces
        try:
            return verify_proof(
                values, method=request.method,
                url=self._settings.issuer + request.path, now=now,
                iat_window_seconds=self._settings.dpop_iat_window_seconds,
                access_token=access_token,
                nonce_valid=(lambda nonce: nonces.is_valid(nonce, now)) if nonces else None)
        except DPoPError as exc:
            if exc.error == USE_DPOP_NONCE and nonces is not None:
                raise UseDPoPNonce(nonces.current(now), resource=resource) from exc
            raise InvalidDPoPProof(exc.description, resource=resource) from exc


def init_app(app: Flask, policy: DPoPPolicy) -> None:
    """With nonces on, let every response hand out the current one (RFC 9449 section 8.2:
    a client learns it from any answer, not only from a refusal)."""
    if policy.current_nonce() is None or not policy.enabled:
        return

    @app.after_request
    def _hand_out_nonce(response: Response) -> Response:
        nonce = policy.current_nonce()
        if nonce and NONCE_HEADER not in response.headers:
            response.headers[NONCE_HEADER] = nonce
        return response
