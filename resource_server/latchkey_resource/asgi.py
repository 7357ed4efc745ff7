"""Protect an ASGI app (Starlette, FastAPI, any other) with Latchkey sessions: a middleware.

    app = LatchkeyMiddleware(app, verifier, exempt_paths={"/healthz"})

Every HTTP request is verified before the app sees it; the principal is put in
``scope["state"]["latchkey_principal"]`` (``request.state.latchkey_principal`` in
Starlette), and a refused request is answered here, in problem+json with Latchkey's code
and the RFC 6750 challenge. For per-route protection in FastAPI use
``latchkey_resource.fastapi.LatchkeySession`` instead.

The verifier is synchronous (redis-py and httpx's sync clients, one round trip): it runs in
a worker thread, so the event loop never waits on Redis. Under asyncio that is a thread
pool of this module's (``loop.run_in_executor``), under any other loop anyio's
(``anyio.to_thread``): anyio's hop cost 80-140 µs of CPU and 350-570 µs of wall clock per
call on the loaded benchmark machine against 45-90 µs and 55-165 µs for the executor
(docs/PERFORMANCE.md, "Resource servers"), and a protected request makes one per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread

from .refusals import Refusal
from .verifier import Principal, ResourceVerifier

__all__ = ["PRINCIPAL_STATE_KEY", "VERIFY_THREADS", "LatchkeyMiddleware", "asgi_headers",
           "verify_scope"]

PRINCIPAL_STATE_KEY = "latchkey_principal"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Return a scope's headers as a dict with lower-case names (the last value wins)."""
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])}


def _url(scope: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("", "")))
    query = scope.get("query_string", b"").decode("latin-1")
    return (f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
            f"{scope.get('path', '')}" + (f"?{query}" if query else ""))


# As many verifications in flight per process as anyio's default thread limiter allows.
VERIFY_THREADS = 40
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """This process's verification threads (made on first use, again after a fork)."""
    global _pool
    pool = _pool
    if pool is None or pool[0] != os.getpid():
        with _pool_lock:
            pool = _pool
            if pool is None or pool[0] != os.getpid():
                pool = _pool = (os.getpid(), ThreadPoolExecutor(
                    VERIFY_THREADS, thread_name_prefix="latchkey-verify"))
    return pool[1]


async def _in_thread(call: Callable[[], Principal]) -> Principal:
    """Run ``call`` in a worker thread, with this task's context variables (as anyio)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: Trio, through anyio
        return await anyio.to_thread.run_sync(call)
    return await loop.run_in_executor(_executor(), contextvars.copy_context().run, call)


async def verify_scope(verifier: ResourceVerifier, scope: Mapping[str, Any]) -> Principal:
    """Verify the request a scope describes (in a worker thread); raise a ``Refusal``."""
    headers = asgi_headers(scope)
    client = scope.get("client")
    return await _in_thread(
        lambda: verifier.verify(headers.get("authorization"), method=scope.get("method", "GET"),
                                url=lambda: _url(scope, headers), headers=headers,
                                remote_addr=client[0] if client else ""))


async def send_refusal(send: Send, refusal: Refusal) -> None:
    """Answer a refusal in problem+json with its challenge."""
    body = json.dumps(refusal.problem()).encode()
    headers = [(b"content-type", b"application/problem+json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LatchkeyMiddleware:
    """ASGI middleware: only requests of a live session reach the app."""

    def __init__(self, app: ASGIApp, verifier: ResourceVerifier, *,
                 exempt_paths: Collection[str] = ()) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        try:
            principal = await verify_scope(self.verifier, scope)
        except Refusal as refusal:
            await send_refusal(send, refusal)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        nonce = self.verifier.current_nonce()
        await self.app(scope, receive, send if nonce is None else _with_nonce(send, nonce))


def _with_nonce(send: Send, nonce: str) -> Send:
    """Return ``send`` adding ``DPoP-Nonce`` to the response (the token server's nonces
    are on): a client learns the nonce from every answer (RFC 9449 section 9)."""

    async def send_with_nonce(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"dpop-nonce" for name, _ in headers):
                headers.append((b"dpop-nonce", nonce.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_nonce
