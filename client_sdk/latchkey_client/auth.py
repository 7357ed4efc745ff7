"""Attach the session to requests and keep it fresh: an ``httpx.Auth`` flow.

For each request to one of the session's origins (the Latchkey server's and the app's
``api_origins``, :class:`~latchkey_client.transport.TokenOrigins`) the flow:

1. refuses a URL with a token-like query parameter (S2);
2. ends the session locally if its absolute lifetime has passed, even offline (L6);
3. refreshes ahead of expiry, measured on the monotonic clock from ``expires_in`` (S3);
4. sends with ``Authorization: Bearer``, or for a session bound to the device key
   (``token_type: DPoP``, P1) ``Authorization: DPoP`` plus a fresh proof with ``ath``
   (``dpop_flow.py``), tried once more with a new proof on ``use_dpop_nonce``; on one 401
   ``token_expired`` or ``invalid_token`` refreshes once and resends; on
   ``session_expired``/``session_revoked`` wipes local tokens and tells the app.

Requests to any other origin go out without ``Authorization``, and an answer that did not
come from one of the session's origins (a redirect's target) is never acted on: it can
neither make the flow refresh nor end the session.

The refresh is single-flight: a thread lock (or asyncio lock) plus a re-check after taking
it, then a lock file shared by processes using the same store plus a re-read of the stored
refresh token. With rotating refresh tokens two racing refreshes look like theft (L3), so
exactly one caller refreshes and the others use its result.

When a refresh's outcome is unknown (connection dropped or timed out after sending), the
*same* refresh token is replayed until ``refresh_replay_seconds`` is spent; inside the
server's grace window the server answers with the same successor, so the user stays signed
in instead of tripping reuse detection. Each replay carries a fresh DPoP proof (the server
takes a proof's ``jti`` once): the refresh's ``Send`` step carries a
:class:`~.dpop_flow.ProofAuth`, which signs anew for every request httpx sends.

Sans-I/O, as httpx's own ``Auth.auth_flow`` is: :meth:`LatchkeyAuth._bearer_flow` decides what
a request needs and :meth:`LatchkeyAuth._refresh_plan` decides how a refresh goes (re-check,
lock file, stored token, replay); ``sync_auth_flow``/``async_auth_flow`` and
``ensure_fresh_sync``/``ensure_fresh_async`` only take the lock and perform the I/O
(``_steps.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from ._core import REFRESH_KEY, SessionCore, Tokens, problem_code
from ._locks import ProcessLock
from ._steps import (
    HoldProcessLock,
    Plan,
    Send,
    Sleep,
    attempt_timeout,
    call_deadline,
    clip_to_deadline,
    map_transport_error,
    never_sent,
    run_async,
    run_sync,
)
from ._timing import Deadline, backoff_delay_seconds
from .dpop_flow import DPoPProver, ProofAuth
from .errors import (
    ApiError,
    ClientClosedError,
    ConfigurationError,
    DPoPKeyLostError,
    DPoPProofRefusedError,
    InvalidTokenError,
    NetworkError,
    NetworkTimeoutError,
    NotSignedInError,
    SessionEndedError,
    SessionExpiredError,
    SessionRevokedError,
    StorageLost,
    StorageUnavailable,
    error_from_response,
    retry_after_seconds,
)
from .events import EventName, SignOutReason
from .transport import TokenOrigins, check_request_url

__all__ = ["DEFAULT_REFRESH_REPLAY_SECONDS", "LatchkeyAuth"]

_log = logging.getLogger("latchkey_client.auth")

#: How long to keep replaying a refresh whose outcome is unknown. Below the server's default
#: 30 s reuse grace window, so every replay lands inside it.
DEFAULT_REFRESH_REPLAY_SECONDS = 20.0

_SESSION_ENDING_CODES = frozenset({"session_expired", "session_revoked", "refresh_token_reused"})
# An access token of ours refused as expired, or as invalid (its signing key was withdrawn,
# RFC 6750 s3.1: the client MAY get a new token and retry): one refresh and one resend. A
# refresh token the server no longer accepts ends the session there.
_REFRESH_AND_RESEND_CODES = frozenset({"token_expired", "invalid_token", "session_replaced"})
#: Not a server code: an answer that ended the session this request was sent in, after the
#: client moved to a new session (``LatchkeyAuth._after_response``).
_SESSION_REPLACED = "session_replaced"


@dataclass(frozen=True)
class _Fresh:
    """A step of the bearer flow: "give me usable tokens", refreshing if ``stale`` is current.

    ``deadline`` is the SDK call's total deadline: the refresh must end within it too.
    """

    stale: Tokens | None
    deadline: Deadline | None = None


_Flow = httpx.Request | _Fresh


def _born_expired(doc: dict[str, Any]) -> bool:
    """Say whether a refresh answer's access token is already dead: the session's last second.

    The server caps a token at the session's absolute end in whole seconds (R3), so a
    refresh less than a second before that end gets ``expires_in: 0``. Every API would
    refuse that token as ``token_expired`` and another refresh would get the same: the
    session is over, and saying so now beats a ``token_expired`` the app cannot act on.
    """
    try:
        return float(doc.get("expires_in", 1)) <= 0
    except (TypeError, ValueError):
        return False  # malformed: ``SessionCore.accept`` says so


def _waited_too_long() -> NetworkTimeoutError:
    """The error of a call whose deadline passed while another caller was refreshing."""
    return NetworkTimeoutError("refresh: the call's deadline passed waiting for a refresh")


class LatchkeyAuth(httpx.Auth):
    """Bearer auth with proactive, single-flight, replay-safe refresh.

    Get one from ``LatchkeyClient.auth``/``AsyncLatchkeyClient.auth`` and pass it to your own
    ``httpx.Client(auth=...)`` to call your API with the session attached; it only ever
    attaches the token to the Latchkey server's origin and the client's ``api_origins``.
    """

    def __init__(
        self,
        core: SessionCore,
        *,
        origin: httpx.URL,
        refresh_url: httpx.URL,
        sync_http: httpx.Client | None = None,
        async_http: httpx.AsyncClient | None = None,
        refresh_timeout: httpx.Timeout,
        refresh_replay_seconds: float = DEFAULT_REFRESH_REPLAY_SECONDS,
        device_id: str | None = None,
        user_agent: str | None = None,
        origins: TokenOrigins | None = None,
        prover: DPoPProver | None = None,
    ) -> None:
        self._core = core
        self._prover = prover
        self._refresh_auth = None if prover is None else ProofAuth(prover, create=False)
        self._origin = origin
        self._origins = origins or TokenOrigins(origin)
        self._refresh_url = refresh_url
        self._sync_http = sync_http
        self._async_http = async_http
        self._refresh_timeout = refresh_timeout
        self._replay_seconds = refresh_replay_seconds
        self._device_id = device_id
        self._user_agent = user_agent
        self._thread_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        #: How many refresh requests this auth has sent (successful or not); for tests/metrics.
        self.refresh_requests = 0

    def __repr__(self) -> str:
        return f"LatchkeyAuth(origin={str(self._origin)!r}, signed_in={self._core.signed_in})"

    # -- the flows ---------------------------------------------------------------------------

    def _applies_to(self, request: httpx.Request) -> bool:
        check_request_url(request.url)
        return self._origins.allows(request.url)

    def request_hook(self, request: httpx.Request) -> None:
        """An ``httpx.Client`` request hook that keeps the session home across redirects.

        httpx follows redirects below the auth flow and keeps ``Authorization`` on an
        ``http://host`` to ``https://host`` upgrade, and every other header always; with
        ``event_hooks={"request": [client.auth.request_hook]}`` your own client drops the
        session's headers (``Authorization``, ``DPoP``, ``X-Device-Id``) from any request
        leaving the session's origins, as the SDK's own client does.
        """
        self._origins.strip_if_foreign(request)

    async def async_request_hook(self, request: httpx.Request) -> None:
        """:meth:`request_hook` for an ``httpx.AsyncClient`` (its hooks are awaited)."""
        self._origins.strip_if_foreign(request)

    def _ours(self, response: httpx.Response) -> bool:
        """Say whether ``response`` came from one of the session's origins.

        httpx follows redirects below the auth flow, so with ``follow_redirects=True`` the
        answer may be a foreign target's: its 401 must not refresh or sign out (R4).
        """
        return self._origins.allows(response.request.url)

    def _bind(self, request: httpx.Request) -> None:
        """Send the device id and User-Agent the session is bound to (D3), whoever's client
        carries the request: under the server's ``enforce`` binding policy a different
        User-Agent ends the session."""
        if self._device_id is not None:
            request.headers["X-Device-Id"] = self._device_id
        if self._user_agent is not None:
            request.headers["User-Agent"] = self._user_agent

    def _authorize(self, request: httpx.Request, tokens: Tokens) -> None:
        """Attach the access token: ``DPoP`` with a fresh proof when bound, else ``Bearer``.

        A bound session whose key is gone can never be used again: signed out as
        ``storage_lost`` (M2), as a lost refresh token is.
        """
        assert tokens.access_token is not None
        if not (tokens.bound and self._prover is not None):
            request.headers.pop("DPoP", None)
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
            return
        try:
            self._prover.attach(request, tokens.access_token, required=True)
        except DPoPKeyLostError:
            self._core.storage_lost()
            raise
        request.headers["Authorization"] = f"DPoP {tokens.access_token}"

    def _proof_retry(self, request: httpx.Request, tokens: Tokens,
                     response: httpx.Response) -> bool:
        """Read a bound request's answer (nonce, clock); re-sign it if one retry may help."""
        if not (tokens.bound and self._prover is not None) or not self._ours(response):
            return False  # a redirect's foreign target cannot make us re-sign anything
        if not self._prover.worth_retrying(request, response):
            return False
        self._authorize(request, tokens)
        return True

    def _precheck(self) -> Tokens:
        tokens = self._core.tokens
        if tokens.refresh_token is None:
            raise NotSignedInError("not signed in")
        if self._core.absolute_expired(tokens):
            raise self._ended_at_absolute()
        return tokens

    def _ended_at_absolute(self) -> SessionExpiredError:
        """Wipe the session, over at its absolute limit, and return the error saying so."""
        self._core.wipe(SignOutReason.ABSOLUTE)
        return SessionExpiredError(
            "the session reached its absolute lifetime",
            reason="absolute", status=401, code="session_expired",
        )

    def _after_response(self, response: httpx.Response,
                        sent: Tokens | None = None) -> str | None:
        """Return the 401 code (body read by the caller); end the session if it is over.

        ``sent`` are the tokens the request carried. An answer that ends *their* session
        after this client moved to a new one (a step-up or password change answered while
        the request was in flight: the server ended the old session for it) is stale, not
        the end of the session held now: it is reported as ``session_replaced``, which the
        flow resends once with the new tokens.
        """
        code = problem_code(response)
        if code in _SESSION_ENDING_CODES:
            current = self._core.tokens
            if (sent is not None and current.refresh_token is not None
                    and current.session_id != sent.session_id):
                return _SESSION_REPLACED
            error = error_from_response(response)
            assert isinstance(error, SessionEndedError)
            self._core.end_from_error(error)
        return code

    def _bearer_flow(self, request: httpx.Request) -> Generator[_Flow, Any, None]:
        """Attach a fresh token, send, and on one 401 ``token_expired``/``invalid_token``
        refresh and resend.

        Sans-I/O, like httpx's ``auth_flow``: it yields the request to send, or a
        :class:`_Fresh` asking its driver for tokens (which may mean a refresh). The driver
        has read the body of every 401 before sending it back.
        """
        if not self._applies_to(request):
            request.headers.pop("Authorization", None)
            yield request
            return
        deadline = call_deadline(request)
        tokens = yield _Fresh(stale=None, deadline=deadline)
        self._authorize(request, tokens)
        self._bind(request)
        clip_to_deadline(request, deadline)
        response = yield request
        if self._proof_retry(request, tokens, response):
            clip_to_deadline(request, deadline)
            response = yield request  # a new nonce or a corrected clock: once, no more
            self._prover_observe(request, tokens, response)
        if (response.status_code != 401 or not self._ours(response)
                or self._after_response(response, tokens) not in _REFRESH_AND_RESEND_CODES):
            return
        tokens = yield _Fresh(stale=tokens, deadline=deadline)
        self._authorize(request, tokens)
        clip_to_deadline(request, deadline)
        response = yield request
        if self._proof_retry(request, tokens, response):
            clip_to_deadline(request, deadline)
            response = yield request
            self._prover_observe(request, tokens, response)
        if response.status_code == 401 and self._ours(response):
            self._after_response(response)

    def _prover_observe(self, request: httpx.Request, tokens: Tokens,
                        response: httpx.Response) -> None:
        """Keep the nonce and clock of an answer no further retry will follow."""
        if tokens.bound and self._prover is not None:
            self._prover.state.observe(request.url, response)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive :meth:`_bearer_flow` for ``httpx.Client``: refresh and read bodies blocking."""
        flow = self._bearer_flow(request)
        step = next(flow)
        while True:
            if isinstance(step, _Fresh):
                outcome: Any = self.ensure_fresh_sync(stale=step.stale, deadline=step.deadline)
            else:
                outcome = yield step
                if outcome.status_code == 401:
                    outcome.read()
            try:
                step = flow.send(outcome)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive :meth:`_bearer_flow` for ``httpx.AsyncClient``."""
        flow = self._bearer_flow(request)
        step = next(flow)
        while True:
            if isinstance(step, _Fresh):
                outcome: Any = await self.ensure_fresh_async(stale=step.stale,
                                                             deadline=step.deadline)
            else:
                outcome = yield step
                if outcome.status_code == 401:
                    await outcome.aread()
            try:
                step = flow.send(outcome)
            except StopIteration:
                return

    # -- single flight -----------------------------------------------------------------------

    def _needs_refresh(self, tokens: Tokens, stale: Tokens | None) -> bool:
        if stale is not None:
            # Forced (the server refused the token): refresh unless someone already did.
            return tokens.generation == stale.generation
        return not self._core.access_fresh(tokens)

    def _process_lock(self, deadline: Deadline | None) -> ProcessLock | None:
        path = self._core.storage.lock_path
        if path is None or not self._core.stay_signed_in:
            return None
        return ProcessLock(path) if deadline is None else ProcessLock(
            path, wait_seconds=deadline.remaining_seconds())

    def _token_to_present(self, tokens: Tokens) -> str:
        """Return the refresh token to send, re-reading the store other processes share."""
        if not self._core.stay_signed_in or self._core.storage.lock_path is None:
            assert tokens.refresh_token is not None
            return tokens.refresh_token
        try:
            stored = self._core.storage.load(REFRESH_KEY)
        except StorageUnavailable:
            # Locked: a sibling that rotated could not have stored its token either, so
            # ours is the newest there is (and inside the grace window it would get the
            # same successor back). The session is not ended for a locked store (M2).
            assert tokens.refresh_token is not None
            return tokens.refresh_token
        except StorageLost:
            self._core.storage_lost()
            raise
        if stored is None:
            # Another process of this app logged out: so are we.
            self._core.wipe(SignOutReason.REMOTE)
            raise SessionRevokedError(
                "signed out by another process", reason="logout", status=401,
                code="session_revoked",
            )
        if stored != tokens.refresh_token:
            _log.debug("another process rotated the refresh token; adopting it")
            self._core.adopt_stored(stored)
        return stored

    def _fall_back(self, tokens: Tokens, stale: Tokens | None, error: NetworkError) -> Tokens:
        """Keep using a still-valid access token if a proactive refresh could not happen."""
        if stale is None and self._core.access_usable(tokens):
            _log.info("proactive refresh failed (%s); using current token", type(error).__name__)
            return tokens
        raise error

    def _current_if_fresh(self, stale: Tokens | None) -> Tokens | None:
        """Return the tokens if no refresh is needed; the plan checks again under the lock."""
        tokens = self._precheck()
        return None if self._needs_refresh(tokens, stale) else tokens

    def ensure_fresh_sync(self, stale: Tokens | None = None,
                          deadline: Deadline | None = None) -> Tokens:
        """Return tokens with a usable access token, refreshing at most once for everyone.

        With ``deadline`` (the calling SDK call's), waiting for another caller's refresh
        and the refresh itself end within it.
        """
        tokens = self._current_if_fresh(stale)
        if tokens is not None:
            return tokens
        if self._sync_http is None:
            raise ConfigurationError("this LatchkeyAuth belongs to an AsyncLatchkeyClient")
        wait = -1 if deadline is None else deadline.remaining_seconds()
        if not self._thread_lock.acquire(timeout=wait):
            raise _waited_too_long()
        try:
            return run_sync(self._refresh_plan(stale, deadline), self._sync_http)
        except DPoPKeyLostError:
            self._core.storage_lost()  # bound to a key that is gone: it can only end (M2)
            raise
        finally:
            self._thread_lock.release()

    async def ensure_fresh_async(self, stale: Tokens | None = None,
                                 deadline: Deadline | None = None) -> Tokens:
        """Return tokens with a usable access token: :meth:`ensure_fresh_sync` for asyncio."""
        tokens = self._current_if_fresh(stale)
        if tokens is not None:
            return tokens
        if self._async_http is None:
            raise ConfigurationError("this LatchkeyAuth belongs to a sync LatchkeyClient")
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        try:
            async with asyncio.timeout(None if deadline is None
                                       else deadline.remaining_seconds()):
                await self._async_lock.acquire()
        except TimeoutError:
            raise _waited_too_long() from None
        try:
            return await run_async(self._refresh_plan(stale, deadline), self._async_http)
        except DPoPKeyLostError:
            self._core.storage_lost()  # bound to a key that is gone: it can only end (M2)
            raise
        finally:
            self._async_lock.release()

    def _refresh_plan(self, stale: Tokens | None,
                      deadline: Deadline | None = None) -> Plan[Tokens]:
        """Refresh once for everyone: the part of single flight that runs under the lock.

        The driver holds the thread (or asyncio) lock; this re-checks after taking it, takes
        the lock file other processes share, presents the newest stored refresh token and
        replays it while the outcome is unknown.
        """
        tokens = self._precheck()
        if not self._needs_refresh(tokens, stale):
            return tokens  # another thread or task refreshed while we waited
        plock = self._process_lock(deadline)
        try:
            if plock is not None:
                yield HoldProcessLock(plock)
            present = self._token_to_present(tokens)
            if not self._needs_refresh(self._core.tokens, stale):
                # A sibling process refreshed and shared its access token: one refresh
                # per expiry serves every process (``share_access_token``).
                return self._core.tokens
            doc, received_at = yield from self._replay_plan(present, deadline)
            if _born_expired(doc):
                raise self._ended_at_absolute()
            return self._core.accept(doc, received_at=received_at, event=EventName.REFRESHED)
        except NetworkError as exc:
            return self._fall_back(tokens, stale, exc)
        finally:
            if plock is not None:
                plock.release()

    # -- the refresh call, replayed on unknown outcome ---------------------------------------

    def _handle_refresh_response(self, response: httpx.Response) -> dict[str, Any] | None:
        """Return the token document, ``None`` to retry, or raise the mapped error."""
        if response.status_code == 200:
            doc = response.json()
            if not isinstance(doc, dict):
                raise ApiError("malformed refresh response", code="bad_response", status=200)
            return doc
        error = error_from_response(response)
        if error.retryable:
            return None  # 429/5xx: nothing changed on the server; try the same token again
        if isinstance(error, SessionEndedError | InvalidTokenError):
            self._core.end_from_error(error)
        elif isinstance(error, DPoPProofRefusedError):
            # Refused even after the one retry a nonce or the clock deserved: this refresh
            # token is bound to a key this installation does not hold (a copied token), or
            # the key changed under it. It will never refresh here again. (The real
            # holder hears STOLEN only if the server ends the session: reason ``stolen``.)
            self._core.wipe(SignOutReason.REVOKED)
        raise error

    def _replay_plan(self, refresh_token: str, call_deadline: Deadline | None = None
                     ) -> Plan[tuple[dict[str, Any], float]]:
        """POST the refresh, presenting the *same* token again while the outcome is unknown.

        Returns the token document and the monotonic instant it arrived. A dropped or timed
        out answer may mean the server rotated: inside its grace window it answers a replay
        with the same successor, so replaying keeps the user signed in. A request that
        certainly never reached the server (connection refused, no DNS) has a known outcome,
        nothing rotated, so it fails at once. The replays stop at the replay budget or at
        the calling SDK call's deadline, whichever comes first.
        """
        deadline = Deadline.after(self._replay_seconds).sooner(call_deadline)
        attempt = 0
        while True:
            attempt += 1
            self.refresh_requests += 1
            last: Exception
            outcome = yield Send(
                "POST", self._refresh_url,
                timeout=attempt_timeout(self._refresh_timeout, deadline.remaining_seconds()),
                auth=self._refresh_auth,  # a fresh proof on every attempt, replays included
                options={"json": {"refresh_token": refresh_token}},
            )
            if isinstance(outcome, ClientClosedError):
                raise outcome
            if isinstance(outcome, httpx.TransportError):
                last = map_transport_error(outcome, "refresh")
                if never_sent(outcome):
                    raise last from outcome  # the token is kept: network loss never signs out
                _log.info("refresh outcome unknown (%s); replaying", type(outcome).__name__)
                last.__cause__ = outcome
                delay = backoff_delay_seconds(attempt)
            else:
                received_at = self._core.clock()
                doc = self._handle_refresh_response(outcome)
                if doc is not None:
                    return doc, received_at
                last = error_from_response(outcome)
                delay = backoff_delay_seconds(
                    attempt, retry_after_seconds=retry_after_seconds(outcome))
            if deadline.remaining_seconds() <= delay:
                raise last
            yield Sleep(delay)
