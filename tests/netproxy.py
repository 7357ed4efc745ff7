"""A loopback HTTP proxy for tests and benchmarks: counts, drops and delays responses.

It stands between an HTTP client (the SDK, the demo) and the *real* server (nothing is
mocked): every request is forwarded to the real server and every response comes from it.
The proxy only adds the failures a phone sees on a bad network: a response lost after the
server processed the request, a slow response, a connection refused while offline, a
connection that never answers; and it can terminate TLS with a test certificate for the
pinning tests, or answer a redirect.

Two ways to lose responses: exactly (``drop_responses[path] = n`` drops the next ``n`` to
that path, for the SDK tests that script one failure) and at random (``drop_rate`` and
``delay_rate``, for the chaos run in ``tests/chaos/`` and ``bench/chaos.py``, with a seed so
a failing run can be repeated). ``stats`` counts what happened either way.

Shared by ``tests/sdk/`` (which re-exports it from ``tests/sdk/proxy.py``), ``tests/chaos/``
and ``bench/chaos.py``; keep it free of pytest so the benchmark can import it.

h11 (already installed with httpx) parses HTTP/1.1 on the client side; httpx forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
        "content-encoding", "proxy-connection", "upgrade", "te", "trailer"}


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    response_status: int | None = None
    response_body: bytes = b""
    dropped: bool = False

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class LoopbackProxy:
    """Run in a background thread with its own event loop; start() / stop()."""

    upstream: str
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    drop_responses: Counter[str] = field(default_factory=Counter)  # path -> how many to drop
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    # path -> answers given instead of forwarding, one per request, as a load balancer in
    # front of a busy server does: e.g. [(503, {"Retry-After": "1"})].
    canned: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    stall: bool = False
    # Random chaos: each forwarded response is dropped with probability ``drop_rate``, else
    # delayed by a uniform draw from ``delay_seconds`` with probability ``delay_rate``; only
    # for paths in ``chaos_paths`` (None: every path). Both can be changed while running.
    drop_rate: float = 0.0
    delay_rate: float = 0.0
    delay_seconds: tuple[float, float] = (0.05, 1.0)
    chaos_paths: frozenset[str] | None = None
    seed: int | None = None
    # Keep every request in ``seen`` (bodies included); a long benchmark turns this off.
    record: bool = True
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()
        self.port = 0

    # -- control (called from the test thread) -------------------------------------------

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> LoopbackProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.go_offline()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def go_offline(self) -> None:
        """Stop listening: new connections are refused, open ones are cut."""
        self._run(self._close())

    def go_online(self) -> None:
        """Listen again on the same port."""
        self._run(self._listen())

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.split("?")[0] == path)

    def requests(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.split("?")[0] == path]

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- the proxy (runs on the loop) ----------------------------------------------------

    async def _listen(self) -> None:
        self._writers: set[asyncio.StreamWriter] = set()
        self._http = httpx.AsyncClient(
            base_url=self.upstream, timeout=30, trust_env=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port or 0, ssl=self.ssl_context, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                path = request.target.decode()
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                seen = Seen(request.method.decode(), path, headers, body)
                route = path.split("?")[0]
                with self._lock:
                    if self.record:
                        self.seen.append(seen)
                    self.stats["requests"] += 1
                    self.stats[f"requests {route}"] += 1
                if self.stall:
                    await asyncio.sleep(3600)
                if path in self.redirects:
                    status, out_headers, content = 302, [("location", self.redirects[path])], b""
                elif canned := self._canned(route):
                    (status, canned_headers), content = canned, b""
                    out_headers = list(canned_headers.items())
                else:
                    fwd = {k: v for k, v in headers.items() if k not in _HOP}
                    resp = await self._http.request(seen.method, path, headers=fwd, content=body)
                    status, content = resp.status_code, resp.content
                    out_headers = [(k, v) for k, v in resp.headers.items()
                                   if k.lower() not in _HOP]
                seen.response_status, seen.response_body = status, content
                drop, delay = self._fate(route)
                if drop:
                    # The server did the work; the phone never hears about it.
                    seen.dropped = True
                    writer.transport.abort()
                    return
                if delay:
                    await asyncio.sleep(delay)
                out_headers.append(("content-length", str(len(content))))
                data = conn.send(h11.Response(status_code=status, headers=out_headers))
                if content:
                    data += conn.send(h11.Data(data=content))
                data += conn.send(h11.EndOfMessage())
                writer.write(data)
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, ssl.SSLError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _canned(self, route: str) -> tuple[int, dict[str, str]] | None:
        """Take the next canned answer for ``route``, if the test scripted one."""
        with self._lock:
            answers = self.canned.get(route)
            return answers.pop(0) if answers else None

    def _fate(self, route: str) -> tuple[bool, float]:
        """Decide whether this response is dropped, or delayed by how many seconds."""
        with self._lock:
            drop = self.drop_responses[route] > 0
            if drop:
                self.drop_responses[route] -= 1
            elif self.chaos_paths is None or route in self.chaos_paths:
                roll = self._rng.random()
                drop = roll < self.drop_rate
                if not drop and roll < self.drop_rate + self.delay_rate:
                    delay = self._rng.uniform(*self.delay_seconds)
                    self.stats["delayed"] += 1
                    self.stats[f"delayed {route}"] += 1
                    return False, delay
            if drop:
                self.stats["dropped"] += 1
                self.stats[f"dropped {route}"] += 1
            return drop, 0.0

    @staticmethod
    async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None, b""
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
