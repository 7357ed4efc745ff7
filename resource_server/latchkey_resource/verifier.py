"""Verify a request to a backend's own API: the token, then its session, in one round trip.

    Authorization: Bearer <jwt>   (or DPoP <jwt> + a DPoP proof, for a DPoP-bound token)
      -> the JWT (``claims.py``): header pinned (EdDSA, at+jwt, no key-carrying headers),
         signature with the issuer's key for its ``kid`` (``jwks.py``), iss, aud, claims;
         the result cached by the exact token string (an Ed25519 check costs more than the
         rest of the request), ``exp`` and the key's presence in the JWKS re-checked on
         every use
      -> the session (``session_check.py``): ``verify_touch.lua``, the very script the token
         server runs for its own ``/v1/me``, with the token server's published policy
         (``policy.py``): live on Redis server time, idle clock touched, device binding
         applied to this request's ``X-Device-Id`` and ``User-Agent``
      -> a DPoP-bound token (``cnf.jkt``) needs ``Authorization: DPoP`` and a proof by that
         key with ``ath`` (``dpop.py``, the token server's own checks) under the token
         server's published DPoP policy (mode, iat window, jti limit, nonces, what a token
         without its key does); its ``jti`` is used up by the same script, in the jti set
         the token server keeps too; a request sent as DPoP is refused with the DPoP
         challenge, whatever the reason
      -> a ``Principal``, or a ``Refusal`` carrying Latchkey's own code and reason.

One store round trip per request (FCALL, or EVALSHA: ``scripts.Script``); the policy is
read at most every few seconds and the JWKS per its max-age. A store that cannot answer
fails closed (``StoreUnavailable``, 503); so does an issuer whose keys were never
fetched. The events the check causes are raised as the token server raises them
(``events.py``).

Framework-free: adapters (``flask.py``, ``asgi.py``, ``fastapi.py``, ``wsgi.py``) pass the
header values in and render the refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import redis

from .binding import Client, client_from_headers
from .claims import AccessClaims, ClaimsRejected, checked_kid, decode_claims, looks_like_jwt
from .dpop import USE_DPOP_NONCE, DPoPError, NonceSource, normalise_htu, verify_proof
from .events import ResourceEvents
from .jwks import JwksCache, KeysUnavailable, check_url
from .policy import PolicyCache, PolicyMissing, SessionPolicy, read_policy
from .redis_client import STORE_DOWN_ERRORS, connect
from .refusals import (
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    Refusal,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    TokenExpired,
    UseDPoPNonce,
)
from .scripts import VERIFY_TOUCH, Script
from .session_check import SessionCheck, SessionState, verify_touch_call

__all__ = ["Principal", "ResourceVerifier"]

_log = logging.getLogger("latchkey_resource")

# Connect and read timeouts for the issuer's JWKS and metadata: the fetch happens on a
# request's path (first use, an unknown kid, a stale document), so it must be short.
HTTP_TIMEOUT = httpx.Timeout(3.0, connect=2.0)
# What a read of the published policy may fail with (no policy, or no store).
_POLICY_FAILURES: tuple[type[Exception], ...] = (PolicyMissing, *STORE_DOWN_ERRORS)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified user and session, as the store holds them now.

    ``auth_level`` and ``auth_time`` come from the session in the store (a step-up shows
    at once), not from the token; times are Unix seconds.
    """

    user_id: str
    session_id: str
    username: str
    client_id: str
    auth_level: str
    auth_time: int
    expires_at: int  # the access token's exp
    session_expires_at: int  # the session's absolute end
    device_id: str
    user_agent: str
    token_id: str  # the token's jti


class _Verified(NamedTuple):
    """A cached signature result: the key that made it and the claims it proved."""

    kid: str
    claims: AccessClaims


class ResourceVerifier:
    """Verify Latchkey access tokens and their live sessions for one backend service.

    ``issuer`` is the Latchkey server's public base URL (its ``LATCHKEY_ISSUER``, the
    tokens' ``iss``); ``redis_url`` the shared store (or pass ``redis_client``, built with
    ``decode_responses=True``). Everything else has a default: the JWKS is found through
    the issuer's RFC 8414 metadata, the audience, idle timeout, retention and binding
    policy are the ones the token server publishes (``policy.py``).

    ``jwks_max_age_seconds`` caps how long the JWKS is held even if its ``Cache-Control``
    allows longer (the server sends 300 s): the longest a withdrawn key keeps verifying
    here. ``jwks_refetch_interval_seconds`` is the least time between two fetches an
    unknown ``kid`` causes.

    DPoP (RFC 9449): ``public_base_url`` is this API's URL as clients see it (behind a
    proxy; default: the URL the adapter passes), against which a proof's ``htu`` is
    compared. Everything else about DPoP (mode, iat window, jti limit, nonces, the
    stolen-token policy) is the token server's, read from its published policy.
    """

    def __init__(self, issuer: str, redis_url: str | None = None, *,
                 redis_client: Any = None, redis_cluster: bool = False,
                 jwks_uri: str | None = None, audience: str | None = None,
                 http_client: httpx.Client | None = None,
                 http_timeout: httpx.Timeout = HTTP_TIMEOUT,
                 jwks_refetch_interval_seconds: float = 10.0,
                 jwks_max_age_seconds: float = 3600.0,
                 policy_refresh_seconds: float = 5.0, token_cache_size: int = 4096,
                 service_name: str = "resource-server", public_base_url: str | None = None,
                 ) -> None:
        self.issuer = check_url(issuer.rstrip("/"), "issuer")
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._nonces: tuple[str, int, NonceSource] | None = None  # (key hex, period, source)
        if redis_client is None:
            if not redis_url:
                raise ValueError("ResourceVerifier needs redis_url (or redis_client): "
                                 "the store the Latchkey server uses")
            redis_client = connect(redis_url, cluster=redis_cluster)
        self.redis = redis_client
        self._audience = audience
        self._http = http_client or httpx.Client(timeout=http_timeout)
        self.jwks = JwksCache(self.issuer, self._http, jwks_uri=jwks_uri,
                              refetch_interval_seconds=jwks_refetch_interval_seconds,
                              min_max_age_seconds=min(30.0, jwks_max_age_seconds),
                              max_max_age_seconds=jwks_max_age_seconds)
        self.policy = PolicyCache(lambda: read_policy(self.redis), policy_refresh_seconds)
        # FCALL of the library the token server loads, EVALSHA until it has (acl.py: a
        # resource server may not load libraries).
        self._script = Script(self.redis, VERIFY_TOUCH, load=False)
        self._events = ResourceEvents(self.redis, service_name)
        self._verified = lru_cache(maxsize=token_cache_size)(self._verify_signature)
        self._issuer_warned = threading.Event()

    # -- the whole check -----------------------------------------------------------------
    def verify(self, authorization: str | None, *, method: str = "GET",
               url: str | Callable[[], str] = "", headers: Mapping[str, str] | None = None,
               remote_addr: str = "") -> Principal:
        """Return who is calling, or raise the ``Refusal`` saying why not.

        ``authorization`` is the request's ``Authorization`` header value (``None`` when
        absent); ``headers`` the request's headers (the device id and user agent the
        session is bound to are read from them); ``remote_addr`` goes into security
        events. ``method`` and ``url`` are the request's, for sender-constrained tokens;
        ``url`` may be a function returning it, called only for a DPoP-bound token (a
        framework's URL rebuilding costs more than the rest of a Bearer check's Python).
        A request sent with ``Authorization: DPoP`` is refused with the DPoP challenge
        (RFC 9449 section 7.1), as the token server refuses it.
        """
        scheme, token = self._credentials(authorization)
        try:
            return self._verify(scheme, token, method=method, url=url, headers=headers,
                                remote_addr=remote_addr)
        except Refusal as refusal:
            refusal.dpop_scheme = scheme == "dpop"
            raise

    def current_nonce(self) -> str | None:
        """Return the DPoP nonce to hand out now (``DPoP-Nonce``), or ``None`` while the
        token server has nonces off (or its policy cannot be read)."""
        try:
            nonces = self._nonce_source(self.policy.current())
        except _POLICY_FAILURES:
            return None
        return nonces.current(time.time()) if nonces else None

    def _verify(self, scheme: str, token: str, *, method: str, url: str | Callable[[], str],
                headers: Mapping[str, str] | None, remote_addr: str) -> Principal:
        policy = self._policy()
        if policy.dpop == "off" and scheme == "dpop":
            # DPoP switched off on the token server: bearer tokens only, as it answers.
            raise InvalidToken("Send the access token as Authorization: Bearer")
        claims = self._claims(token, policy)
        client = client_from_headers(headers or {}, remote_addr)
        if client is None:
            raise InvalidRequest("X-Device-Id must be printable ASCII, at most 128 characters")
        jti = ""
        if claims.jkt and policy.dpop != "off":
            jti = self._proof(scheme, token, claims, client, policy, method=method,
                              url=url() if callable(url) else url, headers=headers or {})
        elif scheme == "dpop":
            # RFC 9449 section 7.1: the DPoP scheme is for DPoP-bound tokens only.
            raise InvalidDPoPProof("This access token is not DPoP-bound: send it as Bearer")
        check = self._check_session(claims, client, policy, jti)
        if check.proof_refused:
            if check.proof_refused == "replayed":
                self._events.security(policy, "dpop_proof_replayed",
                                      user_id=claims.user_id, session_id=claims.session_id,
                                      ip=client.ip, kind="access")
            raise InvalidDPoPProof("The DPoP proof was used already: make a new one"
                                   if check.proof_refused == "replayed" else
                                   "Too many DPoP proofs for this account in the proof window")
        if check.state is SessionState.LIVE:
            if check.binding_changed:
                self._binding_changed(policy, claims, client, check.binding_changed,
                                      revoked=False)
            return Principal(
                user_id=claims.user_id, session_id=claims.session_id,
                username=check.username, client_id=claims.client_id,
                auth_level=check.auth_level, auth_time=check.auth_time,
                expires_at=claims.expires_at, session_expires_at=check.absolute_ms // 1000,
                device_id=check.device_id, user_agent=check.user_agent, token_id=claims.jti)
        if check.state is SessionState.UNKNOWN:
            # Our issuer's signature, but no session the store holds: forged with a stolen
            # key, or a restored store. An alert, as on the token server.
            self._events.security(policy, "unknown_session_token",
                                  user_id=claims.user_id, session_id=claims.session_id,
                                  ip=client.ip)
            raise InvalidToken()
        if check.just_ended:
            if check.binding_changed:
                self._binding_changed(policy, claims, client, check.binding_changed,
                                      revoked=True)
            self._events.session_ended(policy.event_key, claims.user_id, claims.session_id,
                                       check.reason)
        if check.state is SessionState.EXPIRED:
            raise SessionExpired(check.reason or "idle")
        raise SessionRevoked(check.reason or None)

    # -- steps -------------------------------------------------------------------------
    @staticmethod
    def _credentials(authorization: str | None) -> tuple[str, str]:
        """Return (scheme, token) of an ``Authorization`` value, the scheme ``bearer`` (RFC
        6750 2.1) or ``dpop`` (RFC 9449 7.1), or refuse."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        if not scheme:
            raise InvalidToken("Send the access token as Authorization: Bearer",
                               credentials_sent=False)
        scheme = scheme.lower()
        if scheme not in ("bearer", "dpop") or not value.strip():
            raise InvalidToken("Send the access token as Authorization: Bearer (or DPoP)")
        token = value.strip()
        if not looks_like_jwt(token):
            raise InvalidToken("The access token is malformed")
        return scheme, token

    def _proof(self, scheme: str, token: str, claims: AccessClaims, client: Client,
               policy: SessionPolicy, *, method: str, url: str,
               headers: Mapping[str, str]) -> str:
        """Check a DPoP-bound token's proof (RFC 9449 section 7.1); return its ``jti``.

        Sent as Bearer, without a proof or with another key's, the token was copied: the
        ``dpop_stolen_token`` alert, as the token server raises it, and a refusal; under
        the token server's ``DPOP_STOLEN_TOKEN=revoke`` the session check ends the session
        (reason ``stolen``), the same script outcome the token server's own check has.
        """
        values = _header_values(headers, "DPoP")
        missing = ("bearer" if scheme != "dpop" else "no_proof" if not values else "")
        if not missing:
            if self._public_base_url:
                url = self._public_base_url + urlsplit(url).path
            now = time.time()
            nonces = self._nonce_source(policy)
            try:
                proof = verify_proof(
                    values, method=method, url=normalise_htu(url), now=now,
                    iat_window_seconds=policy.dpop_iat_window_seconds, access_token=token,
                    nonce_valid=(lambda nonce: nonces.is_valid(nonce, now)) if nonces else None)
            except DPoPError as exc:
                if exc.error == USE_DPOP_NONCE and nonces is not None:
                    raise UseDPoPNonce(nonces.current(now)) from exc
                raise InvalidDPoPProof(exc.description) from exc
            if proof.jkt == claims.jkt:
                return proof.jti
            missing = "other_key"
        ended = False
        if policy.dpop_theft_policy == "revoke":
            check = self._check_session(claims, client, policy, stolen_revoke=True)
            ended = check.just_ended and check.reason == "stolen"
            if check.just_ended and not ended:  # it timed out on the way: say so
                self._events.session_ended(policy.event_key, claims.user_id,
                                           claims.session_id, check.reason)
        self._events.security(policy, "dpop_stolen_token", user_id=claims.user_id,
                              session_id=claims.session_id, ip=client.ip,
                              kind="access", missing=missing, policy=policy.dpop_theft_policy,
                              revoked=ended)
        if ended:
            self._events.session_ended(policy.event_key, claims.user_id, claims.session_id,
                                       "stolen")
        raise InvalidDPoPProof("This session is bound to a DPoP key: send a proof by it")

    def _nonce_source(self, policy: SessionPolicy) -> NonceSource | None:
        """Return the nonce source of the published nonce key, or ``None`` while nonces are
        off; built once per key and period."""
        if not policy.dpop_nonce_key:
            return None
        held = self._nonces
        if held is None or held[:2] != (policy.dpop_nonce_key, policy.dpop_nonce_period_seconds):
            held = (policy.dpop_nonce_key, policy.dpop_nonce_period_seconds,
                    NonceSource(bytes.fromhex(policy.dpop_nonce_key),
                                period_seconds=policy.dpop_nonce_period_seconds))
            self._nonces = held
        return held[2]

    def _policy(self) -> SessionPolicy:
        try:
            policy = self.policy.current()
        except PolicyMissing as exc:
            _log.error("no session policy in the store: start the Latchkey server against "
                       "this Redis (it publishes lk:{policy})",
                       extra={"event": "policy_missing", "lk_detail": str(exc)})
            raise StoreUnavailable("The session policy is not published in the store") from exc
        except STORE_DOWN_ERRORS as exc:
            raise StoreUnavailable() from exc
        if policy.issuer != self.issuer and not self._issuer_warned.is_set():
            self._issuer_warned.set()
            _log.error("this verifier's issuer is not the one the Latchkey server publishes",
                       extra={"event": "issuer_mismatch", "lk_configured": self.issuer,
                              "lk_published": policy.issuer})
        return policy

    def _claims(self, token: str, policy: SessionPolicy) -> AccessClaims:
        audience = self._audience or policy.audience
        try:
            kid, claims = self._verified(token, audience)
            # A true signature stays true, but its key may since have been withdrawn.
            if not self.jwks.still_published(kid):
                raise InvalidToken()
        except ClaimsRejected as exc:
            raise InvalidToken() from exc
        except KeysUnavailable as exc:
            raise StoreUnavailable("The issuer's signing keys are unavailable") from exc
        if claims.expires_at <= time.time():
            raise TokenExpired()
        return claims

    def _verify_signature(self, token: str, audience: str) -> _Verified:
        """Verify one token fully; failures raise, so only successes are cached (a flood
        of forged tokens cannot evict good entries)."""
        kid = checked_kid(token)
        key = self.jwks.key(kid)
        if key is None:
            raise ClaimsRejected
        return _Verified(kid, decode_claims(token, key, issuer=self.issuer, audience=audience))

    def _check_session(self, claims: AccessClaims, client: Client,
                       policy: SessionPolicy, dpop_jti: str = "", *,
                       stolen_revoke: bool = False) -> SessionCheck:
        keys, args = verify_touch_call(
            claims.user_id, claims.session_id, idle_ms=policy.idle_ms,
            retention_ms=policy.retention_ms, binding_policy=policy.binding_policy,
            device_id=client.device_id, user_agent=client.user_agent,
            binding_fingerprint=client.fingerprint, dpop_jti=dpop_jti,
            dpop_jti_ttl_ms=policy.dpop_jti_ttl_ms, dpop_jti_limit=policy.dpop_jti_limit,
            dpop_stolen_revoke=stolen_revoke)
        try:
            return SessionCheck.from_reply(self._script(keys, args))
        except STORE_DOWN_ERRORS as exc:
            raise StoreUnavailable() from exc
        except redis.exceptions.RedisError as exc:
            # A refused command (an ACL without what the check needs), a script error:
            # the session cannot be checked, so the request is refused, and it is logged.
            _log.error("the session check failed in the store",
                       extra={"event": "session_check_failed", "lk_error": type(exc).__name__,
                              "lk_detail": str(exc)[:300]})
            raise StoreUnavailable() from exc

    def _binding_changed(self, policy: SessionPolicy, claims: AccessClaims, client: Client,
                         changed: str, *, revoked: bool) -> None:
        self._events.security(policy, "binding_changed", user_id=claims.user_id,
                              session_id=claims.session_id, changed=changed,
                              policy=policy.binding_policy, ip=client.ip, revoked=revoked)

    def close(self) -> None:
        """Close the HTTP and Redis connections this verifier opened."""
        self._http.close()
        self.redis.close()


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Return every value of a header: a framework's multi-dict says how many were sent
    (RFC 9449 wants exactly one proof); a plain mapping holds one at most."""
    getlist = getattr(headers, "getlist", None)
    if callable(getlist):
        return [str(v) for v in getlist(name)]
    for key in (name, name.lower()):
        if key in headers:
            return [headers[key]]
    # Header names are case-insensitive (RFC 9110 section 5.1): a WSGI environ's
    # ``HTTP_DPOP`` arrives as ``Dpop`` (``wsgi.py::environ_headers``).
    folded = name.lower()
    return [value for key, value in headers.items() if key.lower() == folded][:1]
