"""Protect FastAPI (or Starlette) routes with Latchkey sessions: a dependency.

    session = LatchkeySession(verifier)

    @app.get("/orders")
    async def orders(principal: Principal = Depends(session)):
        ...

A refused request raises ``LatchkeyRefused``, which :func:`install` (or
``app.add_exception_handler(LatchkeyRefused, refusal_handler)``) answers in problem+json
with Latchkey's code and the RFC 6750 challenge; without the handler FastAPI would render
it as a plain 500. In plain Starlette call ``await session(request)`` in an endpoint, or
use the ASGI middleware (``latchkey_resource.asgi``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .asgi import verify_scope
from .refusals import Refusal
from .verifier import Principal, ResourceVerifier

__all__ = ["LatchkeyRefused", "LatchkeySession", "install", "refusal_handler"]


class LatchkeyRefused(Exception):
    """A refusal on its way to ``refusal_handler``."""

    def __init__(self, refusal: Refusal, *, nonce: str | None = None) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal
        self.nonce = nonce  # the token server's current DPoP nonce, when nonces are on


class _ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def refusal_response(refusal: Refusal, *, nonce: str | None = None) -> Response:
    """Render a refusal as problem+json with its challenge (and the nonce, if any)."""
    headers = {**({"DPoP-Nonce": nonce} if nonce else {}), **refusal.headers()}
    return _ProblemResponse(refusal.problem(), status_code=refusal.status, headers=headers)


async def refusal_handler(request: Request, exc: Exception) -> Response:
    """The exception handler that answers ``LatchkeyRefused``."""
    assert isinstance(exc, LatchkeyRefused)
    return refusal_response(exc.refusal, nonce=exc.nonce)


def install(app: Any) -> None:
    """Register ``refusal_handler`` on a FastAPI or Starlette app."""
    app.add_exception_handler(LatchkeyRefused, refusal_handler)


# The default of ``LatchkeySession``'s ``response`` (FastAPI injects one by its annotation,
# so it cannot be Optional): a call from a plain Starlette endpoint passes none.
_NO_RESPONSE = Response()


class LatchkeySession:
    """A dependency that returns the ``Principal`` of a live session, or refuses."""

    def __init__(self, verifier: ResourceVerifier) -> None:
        self.verifier = verifier

    async def __call__(self, request: Request,
                       response: Response = _NO_RESPONSE) -> Principal:
        # With the token server's nonces on, every answer hands out the current one, a
        # success included, as the Flask extension and the ASGI middleware do (RFC 9449
        # section 8): FastAPI copies ``response``'s headers onto the route's answer. A
        # plain Starlette endpoint calls ``await session(request)``: no response to mark.
        nonce = self.verifier.current_nonce()
        try:
            principal = await verify_scope(self.verifier, request.scope)
        except Refusal as refusal:
            raise LatchkeyRefused(refusal, nonce=nonce) from None
        if nonce is not None and response is not _NO_RESPONSE:
            response.headers["DPoP-Nonce"] = nonce
        request.state.latchkey_principal = principal
        return principal
