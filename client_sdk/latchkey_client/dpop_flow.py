"""Put a DPoP proof on a request, and retry once when the server asks for it.

:class:`DPoPProver` is the one place that turns a request (and the access token it
carries, if any) into a ``DPoP`` header: the device key signs, :class:`~.dpop.ProofState`
supplies the nonce and the server's time. Each call makes a new proof, so every send,
every retry and every replay of a lost refresh carries a fresh ``jti`` (RFC 9449 s11.1:
the server accepts a proof once).

:meth:`DPoPProver.worth_retrying` reads each answer (the nonce it carries, the server's
clock) and says whether one more try can succeed: a ``use_dpop_nonce`` refusal with a
nonce (s8, s9), or an ``invalid_dpop_proof`` refusal that arrived with a server clock far
from ours (the ``iat`` was out of the window; it is right now). Exactly one retry, so a
server that keeps refusing costs one request more, never a loop.

:class:`ProofAuth` is that for token requests (login, refresh): an ``httpx.Auth`` a plan
passes in its ``Send`` step, so the sync and async drivers share it. Protected requests get
their proof in :class:`~.auth.LatchkeyAuth`'s bearer flow, beside the access token.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from .dpop import ProofState, Signer, build_proof, dpop_error, jwk_thumbprint
from .dpop_keys import DeviceKey
from .errors import DPoPKeyLostError

__all__ = ["DPoPProver", "ProofAuth"]


class DPoPProver:
    """Sign one proof per request with this installation's key."""

    def __init__(self, key: DeviceKey, state: ProofState | None = None) -> None:
        self.key = key
        self.state = state if state is not None else ProofState()

    def __repr__(self) -> str:
        return f"DPoPProver(key={self.key!r})"

    @property
    def holder(self) -> str:
        """Which store holds the key, for people."""
        return self.key.holder

    def thumbprint(self) -> str | None:
        """Return the key's RFC 7638 thumbprint (``cnf.jkt``), or ``None`` before the key."""
        signer = self.key.signer(create=False)
        return None if signer is None else jwk_thumbprint(signer.public_jwk())

    def _signer(self, create: bool) -> Signer | None:
        return self.key.signer(create=create)

    def attach(self, request: httpx.Request, access_token: str | None = None, *,
               create: bool = False, required: bool = False) -> bool:
        """Set a fresh ``DPoP`` proof on ``request``; return whether one was set.

        ``create`` makes the key if there is none (a sign-in); ``required`` (a bound
        session) turns "no key" into :class:`DPoPKeyLostError`. Without a key and not
        required, the request goes without a proof and the server decides.
        """
        signer = self._signer(create)
        if signer is None:
            request.headers.pop("DPoP", None)
            if required:
                raise DPoPKeyLostError("this session is bound to a device key that is gone")
            return False
        request.headers["DPoP"] = build_proof(
            signer, method=request.method, url=request.url, issued_at=self.state.now(),
            access_token=access_token, nonce=self.state.nonce_for(request.url),
        )
        return True

    def worth_retrying(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Take the answer's nonce and clock; say if one more proof could be accepted.

        The body of a 400/401 must have been read.
        """
        before = self.state.nonce_for(request.url)
        clock_moved = self.state.observe(request.url, response)
        error = dpop_error(response)
        if error == "use_dpop_nonce":
            return self.state.nonce_for(request.url) not in (None, before)
        return error == "invalid_dpop_proof" and clock_moved


class ProofAuth(httpx.Auth):
    """Attach a proof to a token request (no access token); retry once if asked.

    ``create`` makes the device key on first use: the sign-in passes it, a refresh does
    not (a refresh without the key it was bound to cannot succeed, and a new key would
    hide that).
    """

    requires_response_body = True

    def __init__(self, prover: DPoPProver, *, create: bool) -> None:
        self._prover = prover
        self._create = create

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send with a proof; on a nonce or clock refusal, once more with a new proof."""
        if not self._prover.attach(request, create=self._create):
            yield request
            return
        response = yield request
        if self._prover.worth_retrying(request, response):
            self._prover.attach(request, create=False)
            yield request
