"""Issue, rotate, revoke, end and verify sessions: the one place that decides (L1, L3, L4, D3).

Every face of Latchkey calls this service: the ``/v1`` views, the guard of protected
views, the transport hardening (a token in a URL), the admin CLI and the admin HTTP view,
and the OAuth face (``oauth/``: the token endpoint calls :meth:`SessionService.rotate`,
RFC 7009 revocation :meth:`SessionService.revoke`, introspection
:meth:`SessionService.introspect`), so a session refreshed on either face is the same
session under the same rules. Each operation is one store script
(``store.py``); the service turns the script's reply into a typed result or a typed error
(``errors.py``) and writes the life-cycle and security events for whatever the script
did, so "which event does ending a session raise?" is answered here only
(``SessionService._log_ended``).

It is framework-free: what the request says (device id, user agent, address) arrives as a
``Client``, never read from ``flask.request``; tokens arrive parsed (``RefreshToken``,
``AccessClaims``). Refresh-token reuse is decided here too: the store script answers
``check`` for a minted token older than it can compare, and since the server mints one
chain per session (``tokens.py``), such a token is an ancestor: nothing is recomputed,
so no refresh costs more than one HMAC and one script, whatever its generation says (H2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NoReturn

from latchkey_resource.binding import Client

from .config import Settings
from .errors import (
    InvalidDPoPProof,
    InvalidToken,
    RefreshTokenReused,
    SessionExpired,
    SessionRevoked,
    StoreUnavailable,
    WrongClient,
)
from .events import EventLog
from .serialise import rfc3339
from .store import (
    PROOF_REFUSED,
    EndedSession,
    Revocation,
    Rotation,
    SessionInfo,
    SessionState,
    SessionStore,
)
from .tokens import AccessClaims, RefreshToken, TokenService, new_session_id, new_user_id

__all__ = [
    "Client",
    "Introspection",
    "Principal",
    "SessionService",
    "TokenGrant",
]


def _revoked(ended: list[EndedSession]) -> bool:
    """Return True if a session was ended for a reason other than a timeout (which a lost
    write would only bring back until the clock ends it again)."""
    return any(not e.expired for e in ended)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified user, session and authentication level."""

    user_id: str
    session_id: str
    auth_level: str
    auth_time: int
    device_id: str
    user_agent: str
    username: str
    jkt: str = ""  # the DPoP key its access token is bound to ('' for a bearer token)


@dataclass(frozen=True)
class TokenGrant:
    """A session's new tokens and lifetimes: what a token response carries (API.md)."""

    user_id: str
    session_id: str
    access_token: str = field(repr=False)
    refresh_token: RefreshToken = field(repr=False)
    expires_in: int  # the access token's lifetime, s: never beyond absolute_expires_in
    idle_timeout: int  # s
    absolute_expires_in: int  # s left until the session's absolute limit
    auth_level: str
    auth_time: int
    client_id: str
    jkt: str = ""  # the DPoP key the session is bound to: token_type DPoP, cnf.jkt

    @property
    def token_type(self) -> str:
        """Return the token response's ``token_type`` (RFC 9449 section 5)."""
        return "DPoP" if self.jkt else "Bearer"


@dataclass(frozen=True)
class Introspection:
    """A token whose session is live now, as RFC 7662 describes it (times in s)."""

    user_id: str
    session_id: str
    client_id: str
    auth_level: str
    auth_time: int
    issued_at: int | None  # None for a refresh token: when it was minted is not kept
    expires_at: int
    token_type: str  # "access_token" or "refresh_token"
    jkt: str = ""  # the DPoP key it is bound to: cnf.jkt (RFC 9449 section 6.2), or ''


class SessionService:
    """The session life cycle over the store, with its events."""

    def __init__(self, settings: Settings, store: SessionStore, tokens: TokenService,
                 events: EventLog) -> None:
        self._settings = settings
        self._store = store
        self._tokens = tokens
        self._events = events

    # -- accounts -------------------------------------------------------------------
    def register(self, username: str, password_hash: str, role: str = "user") -> str:
        """Create an account; return its new user id (``UsernameTaken`` if the name is)."""
        user_id = new_user_id()
        self._store.create_user(user_id, username, password_hash, rfc3339(), role=role)
        self._events.lifecycle("user_registered", user_id=user_id)
        return user_id

    # -- issue (L4) -----------------------------------------------------------------
    def issue(self, *, user_id: str, auth_level: str, client: Client, device_name: str = "",
              replaces: str = "", replaced_reason: str = "", end_others_reason: str = "",
              new_password_hash: str = "", verified_password_hash: str = "",
              client_id: str | None = None, verified_generation: str = "",
              rehashed_password_hash: str = "", remember_device: bool = False,
              dpop_jkt: str = "", dpop_jti: str = "") -> TokenGrant:
        """Create a fresh session (new id, new tokens) for an authenticated user.

        Step-up and password change pass ``replaces`` (and password change a new password
        hash and ``end_others_reason``): the store does it all in one atomic script (L4),
        and raises ``SessionRevoked``/``SessionExpired`` if the session to replace ended
        meanwhile, ``InvalidCredentials`` if the verified password hash changed.
        ``client_id`` is the OAuth client the session belongs to (default: the built-in
        client of ``/v1`` logins); only it may refresh the session's tokens.
        A login passes the credential generation it read with the hash it verified (and a
        rehash to store): if a password change, logout-all or revoke-all committed since,
        the script refuses the login (``InvalidCredentials``) rather than let a session
        authorised by the old credential outlive it (L4). ``remember_device`` records the
        client's device as one that signed in (its own login budget, D2).
        ``dpop_jkt`` binds the session to a DPoP key (a login's proof, or the replaced
        session's key); ``dpop_jti`` is the request's proof's, accepted once.
        """
        session_id = new_session_id()
        refresh = self._tokens.new_refresh_token(user_id, session_id)
        auth_time = int(time.time())
        created = self._store.create_session(
            user_id=user_id, session_id=session_id,
            refresh_hash=self._tokens.refresh_hash(refresh), auth_level=auth_level,
            auth_time=auth_time, device_id=client.device_id, device_name=device_name,
            user_agent=client.user_agent, ip=client.ip, replaces=replaces,
            replaced_reason=replaced_reason, end_others_reason=end_others_reason,
            new_password_hash=new_password_hash, verified_password_hash=verified_password_hash,
            client_id=client_id,
            verified_generation=verified_generation,
            rehashed_password_hash=rehashed_password_hash,
            known_device_ref=(self._events.device_ref(user_id, client.device_id)
                              if remember_device and client.device_id else ""),
            dpop_jkt=dpop_jkt, dpop_jti=dpop_jti,
        )
        self._log_ended(user_id, created.ended)
        self._events.lifecycle("session_created", session_id=session_id, user_id=user_id,
                               auth_level=auth_level)
        if new_password_hash:
            self._events.lifecycle("password_changed", user_id=user_id)
        if new_password_hash or _revoked(created.ended):
            self._make_durable(user_id)
        return self._grant(refresh, auth_level, auth_time,
                           self._settings.absolute_timeout_seconds, client_id, dpop_jkt)

    # -- rotate (L3, D3) ------------------------------------------------------------
    def rotate(self, token: RefreshToken, client: Client, *,
               client_id: str | None = None, dpop_jkt: str = "",
               dpop_jti: str = "") -> TokenGrant:
        """Exchange a refresh token for its successor, or raise why not.

        The store script decides rotation, the grace-window retry, reuse after the
        window, the idle and absolute limits and the device binding, atomically; an older
        ancestor of the chain is recognised by its MAC (one chain is minted per session).

        A token whose MAC does not check was never minted by this server, or was minted
        before tokens carried a MAC (issue 13's upgrade): it is still compared, in O(1),
        with the session's current and previous hashes, so a session of before the
        upgrade refreshes once more into MAC'd tokens, but its generation is never
        believed: it is never taken for an ancestor, and never reported as a leak.

        ``client_id`` is the OAuth client presenting the token (default: the built-in
        one, as on ``/v1``); a token issued to another client is ``WrongClient``.

        ``dpop_jkt``/``dpop_jti`` are the request's checked DPoP proof ('' without one): a
        bound session's token without a proof by its key is refused as stolen (P1), and
        the script decides it before anything rotates.
        """
        authentic = self._tokens.is_authentic(token)
        successor = self._tokens.successor(token)
        result = self._store.rotate_refresh(
            user_id=token.user_id, session_id=token.session_id,
            presented_hash=self._tokens.refresh_hash(token),
            successor_hash=self._tokens.refresh_hash(successor),
            presented_generation=token.generation if authentic else -1,
            device_id=client.device_id,
            user_agent=client.user_agent, binding_fingerprint=client.fingerprint,
            client_id=client_id, dpop_jkt=dpop_jkt, dpop_jti=dpop_jti,
        )
        # 0. Another client's token (RFC 6749 section 6): refused, nothing changed.
        if result.outcome is Rotation.WRONG_CLIENT:
            raise WrongClient()
        # 0b. DPoP (RFC 9449 section 5): a bound session's token without its key was
        # copied; a proof seen before was captured. Refused before anything rotated.
        if result.outcome is Rotation.DPOP_STOLEN:
            raise self._stolen(token.user_id, token.session_id, client, "refresh",
                               result.dpop_missing, result.just_ended)
        if result.outcome in (Rotation.DPOP_REPLAYED, Rotation.DPOP_FULL):
            refused = "replayed" if result.outcome is Rotation.DPOP_REPLAYED else "full"
            raise self._proof_refused(token.user_id, token.session_id, client, refused,
                                      "refresh", resource=False)
        # 1. The current token, or a retry of the previous one inside the grace window.
        if result.outcome in (Rotation.ROTATED, Rotation.REPLAYED):
            if result.binding_changed:
                self._binding_changed(token.user_id, token.session_id, client,
                                      result.binding_changed, revoked=False)
            if result.outcome is Rotation.ROTATED:
                self._events.lifecycle("session_refreshed", session_id=token.session_id,
                                       user_id=token.user_id, generation=successor.generation)
            return self._grant(successor, result.auth_level, result.auth_time,
                               result.absolute_left_ms // 1000, client_id, result.jkt)
        # 2. The session is over: expired, ended by someone, or ended now by binding.
        if result.outcome is Rotation.ENDED:
            self._refuse_ended(token.user_id, token.session_id, client, result.state,
                               result.reason, result.just_ended, result.binding_changed)
        # 3. The previous token after the grace window: the script ended the session.
        if result.outcome is Rotation.REUSED:
            raise self._reuse_detected(token, client, revoked_now=True)
        # 4. A minted token of an older generation (the script answers ``check`` only for
        # those): an ancestor of this session's one chain. It was copied: end the session.
        if result.outcome is Rotation.CHECK:
            outcome = self._store.revoke_session(token.user_id, token.session_id, "reuse")
            raise self._reuse_detected(token, client,
                                       revoked_now=outcome is Revocation.REVOKED)
        # 5. Not a token of any session we hold. Minted by us, it means a restored store
        # or a leaked key (an alert); never minted, it is a guess (noise, counted by D2).
        if authentic:
            self._events.security("unknown_session_token", session_id=token.session_id,
                                  user_id=token.user_id, ip=client.ip, kind="refresh")
        raise InvalidToken()

    def _reuse_detected(self, token: RefreshToken, client: Client,
                        revoked_now: bool) -> RefreshTokenReused:
        """Report a replayed refresh token (and the revocation it caused); return the error."""
        self._events.security("refresh_token_reused", session_id=token.session_id,
                              user_id=token.user_id, ip=client.ip, generation=token.generation)
        if revoked_now:
            self._events.lifecycle("session_revoked", session_id=token.session_id,
                                   user_id=token.user_id, reason="reuse")
        self._make_durable(token.user_id)
        return RefreshTokenReused()

    # -- verify (T2, D3) ------------------------------------------------------------
    def verify(self, claims: AccessClaims, client: Client, *, dpop_jti: str = "") -> Principal:
        """Check a verified access token's session is live, apply the binding policy and
        touch the idle clock (one round trip); return who is calling or raise why not.

        ``dpop_jti`` is the request's checked DPoP proof's (its key already compared with
        the token's ``cnf.jkt`` by the caller): the same script accepts it once.
        """
        check = self._store.verify_touch(claims.user_id, claims.session_id,
                                         device_id=client.device_id,
                                         user_agent=client.user_agent,
                                         binding_fingerprint=client.fingerprint,
                                         dpop_jti=dpop_jti)
        if check.proof_refused:
            raise self._proof_refused(claims.user_id, claims.session_id, client,
                                      check.proof_refused, "access", resource=True)
        if check.state is SessionState.LIVE:
            if check.binding_changed:
                self._binding_changed(claims.user_id, claims.session_id, client,
                                      check.binding_changed, revoked=False)
            return Principal(claims.user_id, claims.session_id, check.auth_level,
                             check.auth_time, check.device_id, check.user_agent,
                             check.username, claims.jkt)
        if check.state is SessionState.UNKNOWN:
            # Our signature, but no session we hold: forged with a stolen key, or restored.
            self._events.security("unknown_session_token", session_id=claims.session_id,
                                  user_id=claims.user_id, ip=client.ip)
            raise InvalidToken()
        self._refuse_ended(claims.user_id, claims.session_id, client, check.state,
                           check.reason, check.just_ended, check.binding_changed)

    def refuse_unproven(self, claims: AccessClaims, client: Client,
                        missing: str) -> InvalidDPoPProof:
        """Report a DPoP-bound access token presented without a proof by its key
        (``missing``: ``bearer``, ``no_proof`` or ``other_key``); return the error to raise.

        By ``DPOP_STOLEN_TOKEN`` the session stays live (the key holder still uses it) or
        is ended now with reason ``stolen``.
        """
        ended = False
        if self._settings.dpop_theft_policy == "revoke":
            # The session check's own outcome, as on every resource server (verify_touch).
            check = self._store.verify_touch(claims.user_id, claims.session_id,
                                             binding_policy="off", dpop_stolen_revoke=True)
            ended = check.just_ended and check.reason == "stolen"
            if check.just_ended and not ended:  # it timed out on the way: say so
                self._log_ended(claims.user_id, [EndedSession(claims.session_id,
                                                              check.reason)])
        return self._stolen(claims.user_id, claims.session_id, client, "access", missing,
                            ended)

    def introspect(self, user_id: str, session_id: str, *, claims: AccessClaims | None = None,
                   refresh: RefreshToken | None = None) -> Introspection | None:
        """Say whether a token's session is live now (RFC 7662), or ``None``.

        It counts as activity (the idle clock is touched, as by a protected request), so
        a backend serving the user keeps the session alive; binding is not applied, since
        the caller is a resource server, not the user's device. A refresh token is
        active while it is the session's current one (or the previous one inside its
        grace window). An ended or expired session is inactive without an event here:
        the resource server asking is not the holder of the token.
        """
        check = self._store.verify_touch(
            user_id, session_id, binding_policy="off",
            refresh_hash=self._tokens.refresh_hash(refresh) if refresh else "")
        if check.state is not SessionState.LIVE:
            if check.just_ended:
                self._log_ended(user_id, [EndedSession(session_id, check.reason)])
            return None
        if claims is not None:
            return Introspection(user_id, session_id, claims.client_id, check.auth_level,
                                 check.auth_time, claims.issued_at, claims.expires_at,
                                 "access_token", claims.jkt)
        # A refresh token lasts as long as its session may: its absolute end.
        return Introspection(user_id, session_id, self._store.client_of(check),
                             check.auth_level, check.auth_time, None,
                             check.absolute_ms // 1000, "refresh_token", check.jkt)

    # -- end (L1, D5) ---------------------------------------------------------------
    def revoke(self, user_id: str, session_id: str, reason: str, *,
               refresh_hash: str = "", only_client: str | None = None) -> Revocation:
        """End one session with ``reason`` (``logout``, ``remote``, ``admin``, ``leak``...).

        With ``refresh_hash`` it ends only if that is one of the session's refresh tokens
        (logout by refresh token, a leaked refresh token); with ``only_client`` only if
        the session was issued to that client (RFC 7009), else ``WRONG_CLIENT``.
        Idempotent: an ended session answers ``ENDED``, an unknown one ``UNKNOWN``, and
        neither raises an event.
        """
        outcome = self._store.revoke_session(user_id, session_id, reason, refresh_hash,
                                             only_client=only_client)
        if outcome is Revocation.REVOKED:
            self._log_ended(user_id, [EndedSession(session_id, reason)])
        if outcome is not Revocation.UNKNOWN:
            # An ENDED answer may follow a revocation that was not confirmed: confirm it.
            self._make_durable(user_id)
        return outcome

    def end_all(self, user_id: str, *, scope: str = "all", current_session_id: str = "",
                current_reason: str = "logout", others_reason: str = "remote",
                ) -> list[EndedSession]:
        """End every session of a user (``all``) or all but the caller's (``others``).

        One script: the caller's session ends with ``current_reason``, the others with
        ``others_reason``; sessions found expired on the way are marked expired.
        """
        ended = self._store.end_sessions(user_id, current_session_id=current_session_id,
                                         scope=scope, current_reason=current_reason,
                                         others_reason=others_reason)
        self._log_ended(user_id, ended)
        self._make_durable(user_id)
        return ended

    def sessions_of(self, user_id: str) -> list[SessionInfo]:
        """Return a user's live sessions, oldest first."""
        return self._store.list_sessions(user_id)

    # -- durability (L1) ------------------------------------------------------------
    def _make_durable(self, user_id: str) -> None:
        """Confirm a revocation is durable before it is answered, or say it is not.

        Every path that ends a session for a reason other than a timeout comes here after
        its events are written, so the answer (``204``, ``401 session_revoked``...) is sent
        only once the store has fsynced it and a replica holds it, as far as the store can
        confirm (durability.py). Unconfirmed in time: ``revocation_unconfirmed`` is raised,
        and under ``REVOCATION_UNCONFIRMED=fail`` the request fails closed with 503.
        """
        if self._store.make_durable(user_id):
            return
        self._events.security("revocation_unconfirmed", user_id=user_id,
                              policy=self._settings.revocation_unconfirmed)
        if self._settings.revocation_unconfirmed == "fail":
            raise StoreUnavailable()

    # -- events and errors ----------------------------------------------------------
    def _log_ended(self, user_id: str, ended: list[EndedSession]) -> None:
        """Write one life-cycle event per session a script ended: the one place that
        maps an end reason to its event."""
        for session_id, reason in ended:
            if EndedSession(session_id, reason).expired:
                self._events.lifecycle("session_expired", session_id=session_id,
                                       user_id=user_id, reason=reason)
            elif reason == "logout":
                self._events.lifecycle("session_logged_out", session_id=session_id,
                                       user_id=user_id)
            else:
                self._events.lifecycle("session_revoked", session_id=session_id,
                                       user_id=user_id, reason=reason)

    def _binding_changed(self, user_id: str, session_id: str, client: Client, changed: str,
                         revoked: bool) -> None:
        """Raise the ``binding_changed`` event (D3): which bound values changed, never the
        values themselves, and whether the policy ended the session."""
        self._events.security("binding_changed", session_id=session_id, user_id=user_id,
                              changed=changed, policy=self._settings.binding_policy,
                              ip=client.ip, revoked=revoked)

    def _stolen(self, user_id: str, session_id: str, client: Client, kind: str,
                missing: str, ended: bool) -> InvalidDPoPProof:
        """Raise the stolen-token event (P1): a genuine token of a DPoP-bound session
        without a proof by its key; return the error for the request."""
        self._events.security("dpop_stolen_token", session_id=session_id, user_id=user_id,
                              ip=client.ip, kind=kind, missing=missing,
                              policy=self._settings.dpop_theft_policy, revoked=ended)
        if ended:
            self._log_ended(user_id, [EndedSession(session_id, "stolen")])
            self._make_durable(user_id)
        return InvalidDPoPProof("This session is bound to a DPoP key: send a proof by it",
                                resource=kind == "access")

    def _proof_refused(self, user_id: str, session_id: str, client: Client, refused: str,
                       kind: str, *, resource: bool) -> InvalidDPoPProof:
        """Report a proof whose jti was seen (a captured proof replayed); return the error."""
        if refused == "replayed":
            self._events.security("dpop_proof_replayed", session_id=session_id,
                                  user_id=user_id, ip=client.ip, kind=kind)
        return InvalidDPoPProof(PROOF_REFUSED[refused], resource=resource)

    def _refuse_ended(self, user_id: str, session_id: str, client: Client, state: SessionState,
                      reason: str, just_ended: bool, binding_changed: str) -> NoReturn:
        """Raise the error for a token of a session that is over; log it if it just ended."""
        if just_ended:
            if binding_changed:
                self._binding_changed(user_id, session_id, client, binding_changed,
                                      revoked=True)
            self._log_ended(user_id, [EndedSession(session_id, reason)])
            if _revoked([EndedSession(session_id, reason)]):
                self._make_durable(user_id)
        if state is SessionState.EXPIRED:
            raise SessionExpired(reason or "idle")
        raise SessionRevoked(reason or None)

    def _grant(self, refresh: RefreshToken, auth_level: str, auth_time: int,
               absolute_left_seconds: int, client_id: str | None, jkt: str) -> TokenGrant:
        """Mint the access token for a session's new refresh token: its ``exp`` is capped
        at the session's absolute end (R3), so ``expires_in`` never exceeds
        ``absolute_expires_in``."""
        absolute_left = max(0, absolute_left_seconds)
        if self._settings.dpop == "off":
            jkt = ""  # DPoP switched off: sessions bound before get bearer tokens again
        lifetime = self._tokens.access_token_lifetime(absolute_left)
        client_id = client_id or self._settings.default_client_id
        access = self._tokens.issue_access_token(refresh.user_id, refresh.session_id,
                                                 auth_level, auth_time, client_id=client_id,
                                                 lifetime_seconds=lifetime, jkt=jkt)
        return TokenGrant(
            user_id=refresh.user_id, session_id=refresh.session_id, access_token=access,
            refresh_token=refresh, expires_in=lifetime,
            idle_timeout=self._settings.idle_timeout_seconds,
            absolute_expires_in=absolute_left, auth_level=auth_level,
            auth_time=auth_time, client_id=client_id, jkt=jkt,
        )
