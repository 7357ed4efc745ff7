"""Slow and then refuse guessing and brute force (D2), counting failures in Redis.

Flask-Limiter does the counting, with its Redis storage on the session store's Redis
(one thing to run, one thing to back up) under ``store.RATE_LIMIT_KEY_PREFIX``. Each
budget is a named :class:`FailureBudget` below (sized by settings in ``config.py``), and
each view says which it spends with one line under its route, ``@throttle.limited(...)``,
so a reader of ``login()`` sees its limits there. The decorator only marks the view: the
limiter is built per app in :func:`init_app` (no global client), which wraps every marked
view. The budgets:

- failed logins per account (the username's keyed pseudonym): tight, 10 per 15 minutes by
  default. A login from a device that has signed in to the account before (its device
  id, recorded by the store at each successful login) is counted per account *and
  device* instead (``known_device_failures``): an attack on the account, from however
  many addresses and in whatever case, cannot lock out the owner's own phone (OWASP:
  lockout must not become a denial of service of the owner);
- registrations of a taken name, per name in any case (``taken_name_failures``): a
  budget of their own, so probing a name never spends its owner's login budget;
- failed logins per client IP and failed registrations (a taken name: username probing)
  per client IP: generous, because mobile carriers put thousands of users behind one
  address (CGNAT);
- wrong passwords at step-up (``/v1/auth/reauth``) and password change, per signed-in
  user and per client IP, with the login budgets: a stolen access token must not become
  an unmetered password oracle;
- invalid tokens per client IP: 100 per minute by default. A token counts when one was
  presented (Bearer header or a refresh token in the body) and was refused as
  ``invalid_token`` (malformed, bad signature, unknown session); expired tokens do not
  count, since refreshing after expiry is what clients are meant to do. A refresh token
  whose MAC does not check (``tokens.py``: the server never minted it) is charged
  *before* anything else is done with it (:func:`charge_unverified_token`), so a client
  out of budget is refused without touching the store (H2). A refused DPoP proof with a
  token (``invalid_dpop_proof``: bad signature, wrong key, replayed jti, wrong htu...)
  spends the same budget, so guessing at a proof is metered like guessing at a token; a
  nonce demand (``use_dpop_nonce``) does not (P1).

Only failures cost anything. Login and registration use Flask-Limiter's conditional
deduction (``deduct_when``): one read of the counter before the view, one increment
after a failure. Invalid tokens are counted in the ``InvalidToken`` error handler, so a
valid request on the hot path (``/v1/me``) makes no extra Redis call at all.

A limit is slowed-then-refused by construction: up to the budget, requests are answered
normally; past it, 429 ``too_many_requests`` with ``Retry-After`` until the moving window
has room again. The first refusal of each window raises one security event
(``brute_force`` or ``token_guessing``), not one per refused request, so an attacker
cannot flood the security stream.

IPv6 clients are counted per /64 (one subscriber's allocation), since a single host can
rotate through the addresses of its /64 for free.

If the rate-limit storage fails, the request fails closed with 503 ``store_unavailable``
(``swallow_errors=False``, storage errors mapped in ``errors.py``): the counters live in
the same Redis as the sessions, so a request that could not be counted could not have
been served anyway, and an attacker must not be able to turn an outage into unmetered
guessing.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from flask.globals import request_ctx
from flask_limiter import Limiter, RequestLimit
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError

from . import observability
from .api.inputs import json_body
from .binding import request_device_id
from .config import Settings, cluster_seed_nodes
from .errors import (
    ApiError,
    InvalidDPoPProof,
    InvalidToken,
    TooManyRequests,
    UseDPoPNonce,
    problem_response,
)
from .extension import Services
from .redis_connection import connection_options
from .store import RATE_LIMIT_KEY_PREFIX

__all__ = ["ACCOUNT_FAILURES", "BUDGETS", "EXTENSION_KEY", "LOGIN_IP_FAILURES",
           "REGISTRATION_IP_FAILURES", "STEP_UP_FAILURES", "STEP_UP_IP_FAILURES",
           "TAKEN_NAME_FAILURES",
           "FailureBudget", "Throttle", "charge_unverified_token", "client_ip_key", "init_app",
           "limited", "proof_failure_counts"]

EXTENSION_KEY = "latchkey_throttle"

_log = logging.getLogger("latchkey.throttle")

_BUDGETS_ATTR = "_latchkey_failure_budgets"
# Whom a budget counts per: the client's address, the account a login names, or the user
# a Bearer token names.
_PER_IP, _PER_ACCOUNT, _PER_SIGNED_IN_USER = "ip", "account", "signed_in_user"
_PER_NAME = "name"  # the username a registration asks for, any case


@dataclass(frozen=True)
class FailureBudget:
    """One D2 budget: which failures spend it, per what, sized by which two settings.

    ``label`` names it in the ``rate_limited`` metric and the security event. A budget
    with a ``shared_scope`` is one counter for every view that spends it (Flask-Limiter's
    shared limit, the scope part of its key); any other is a counter per view, keyed
    ``<endpoint>:ip``.
    """

    label: str
    per: str
    amount_setting: str
    window_setting: str
    counts: tuple[str, ...]  # the error codes that spend it; successes never do
    shared_scope: str | None = None

    def limit_string(self, settings: Settings) -> str:
        """Return the Flask-Limiter limit for these settings."""
        amount, window = getattr(settings, self.amount_setting), getattr(
            settings, self.window_setting)
        return f"{amount} per {window} second"


ACCOUNT_FAILURES = FailureBudget(
    "account_failures", _PER_ACCOUNT, "login_failures_per_account",
    "login_failures_per_account_window_seconds", ("invalid_credentials",),
    shared_scope="account")
TAKEN_NAME_FAILURES = FailureBudget(
    "taken_name_failures", _PER_NAME, "registration_failures_per_name",
    "registration_failures_per_name_window_seconds", ("username_taken",),
    shared_scope="taken_name")
LOGIN_IP_FAILURES = FailureBudget(
    "login_ip_failures", _PER_IP, "login_failures_per_ip",
    "login_failures_per_ip_window_seconds", ("invalid_credentials",))
REGISTRATION_IP_FAILURES = FailureBudget(
    "register_ip_failures", _PER_IP, "registration_failures_per_ip",
    "registration_failures_per_ip_window_seconds", ("username_taken",))
# Step-up and password change check a password too: a stolen access token must not become
# an unmetered password oracle. Same budgets as login, keyed by the token's user.
STEP_UP_FAILURES = FailureBudget(
    "step_up_failures", _PER_SIGNED_IN_USER, "login_failures_per_account",
    "login_failures_per_account_window_seconds", ("invalid_credentials",),
    shared_scope="step_up")
STEP_UP_IP_FAILURES = FailureBudget(
    "step_up_ip_failures", _PER_IP, "login_failures_per_ip",
    "login_failures_per_ip_window_seconds", ("invalid_credentials",))
BUDGETS = (ACCOUNT_FAILURES, TAKEN_NAME_FAILURES, LOGIN_IP_FAILURES, REGISTRATION_IP_FAILURES,
           STEP_UP_FAILURES, STEP_UP_IP_FAILURES)

_View = TypeVar("_View", bound=Callable[..., Any])


def limited(*budgets: FailureBudget) -> Callable[[_View], _View]:
    """Declare the failure budgets a view spends, checked in the order given.

    Put it directly under the route decorator, so it marks the view the route registers
    (outside ``require_session``: a refused guess costs no session lookup). ``init_app``
    applies the limits; the view itself is returned unchanged.
    """

    def mark(view: _View) -> _View:
        setattr(view, _BUDGETS_ATTR, budgets)
        return view

    return mark


_INVALID_TOKEN_SCOPE = "invalid_token"  # noqa: S105 - a counter scope, not a secret


def client_ip_key() -> str:
    """Return the client's address as a counter key: IPv4 as is, IPv6 as its /64."""
    addr = request.remote_addr or "-"
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _storage_uri(redis_url: str, settings: Settings) -> str:
    """Return the limits storage URI for a redis-py URL (unix sockets have their own scheme).

    A cluster is limits' ``redis+cluster://host:port,...`` with every seed node; the URL's
    credentials and TLS travel as options (``redis_connection.connection_options``).
    """
    if settings.redis_cluster:
        return "redis+cluster://" + ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for host, port in cluster_seed_nodes(settings))
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


@dataclass
class Throttle:
    """The app's limiter and the invalid-token counter built on its storage."""

    limiter: Limiter
    services: Services
    invalid_token_item: RateLimitItem
    # Flask-Limiter's scope of each applied limit (the shared scope, or "<endpoint>:ip")
    # -> its budget, so a refusal is reported under the budget's label.
    budgets_by_scope: dict[str, FailureBudget] = field(default_factory=dict)

    def name_key(self) -> str:
        """Return the counter key of the username a login or registration names.

        A keyed pseudonym of the lower-cased username, so Redis holds no usernames in
        counter keys; malformed input shares one key (it fails validation anyway).
        """
        username = json_body(required=False).get("username")  # H1: the one parse, cached
        if not isinstance(username, str) or not 0 < len(username) <= 64:
            return "-"
        return self.services.events.user_ref("username:" + username.lower())

    def account_key(self) -> str:
        """Return the counter key of a login's account: per account, or per account and
        device when the device has signed in to that account before.

        The known-device check costs two reads, on logins only, before the argon2 work.
        """
        name_ref = self.name_key()
        body = request.get_json(silent=True)
        device_id = body.get("device_id") if isinstance(body, dict) else None
        if not isinstance(device_id, str) or not device_id:
            try:
                device_id = request_device_id()
            except ApiError:
                device_id = ""  # the view refuses the header; here it is just no device
        username = body.get("username") if isinstance(body, dict) else None
        if name_ref == "-" or not device_id or not isinstance(username, str):
            return name_ref
        svc = self.services
        user_id = svc.store.user_id_for(username)
        if not user_id:
            return name_ref
        device_ref = svc.events.device_ref(user_id, device_id)
        if not svc.store.is_known_device(user_id, device_ref):
            return name_ref
        g.known_device = True  # reported under its own label (on_breach)
        return f"{name_ref}:device:{device_ref}"

    def signed_in_user_key(self) -> str:
        """Return the counter key of the user a Bearer token names (step-up, password change).

        The token's signature is checked (cached, no store call), so nobody can spend
        another user's budget with a forged ``sub``; an invalid token shares one key (the
        view refuses it anyway).
        """
        _, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = self.services.tokens.verify_access_token(value.strip())
        except ApiError:
            return "-"
        return self.services.events.user_ref(claims.user_id)

    def on_breach(self, limit: RequestLimit) -> None:
        """Record a refusal by a Flask-Limiter limit: Retry-After, metric, one event."""
        key, scope = limit.request_args[-2], limit.request_args[-1]
        budget = self.budgets_by_scope.get(scope)
        g.retry_after_seconds = max(1, int(limit.reset_at - time.time()))
        label = budget.label if budget else scope
        if budget is ACCOUNT_FAILURES and g.get("known_device"):
            label = "known_device_failures"
        self._refused(label, key, limit.limit, "brute_force",
                      per_account=budget is not None and budget.per != _PER_IP)

    def count_invalid_token(self) -> int | None:
        """Count one invalid token from this client; return Retry-After if now refused."""
        ip = client_ip_key()
        strategy = self.limiter.limiter
        if strategy.hit(self.invalid_token_item, ip, _INVALID_TOKEN_SCOPE):
            return None
        reset_at, _ = strategy.get_window_stats(self.invalid_token_item, ip,
                                                _INVALID_TOKEN_SCOPE)
        self._refused("invalid_token_ip", ip, self.invalid_token_item, "token_guessing",
                      per_account=False)
        return max(1, int(reset_at - time.time()) + 1)

    def _refused(self, label: str, key: str, item: RateLimitItem, event: str, *,
                 per_account: bool) -> None:
        observability.metrics().rate_limited.labels(limit=label).inc()
        # One event per key and window: the first refusal wins the one-shot counter.
        once = RateLimitItemPerSecond(1, item.get_expiry())
        if self.limiter.limiter.hit(once, key, label, "reported"):
            fields: dict[str, Any] = {"limit": label, "ip": request.remote_addr,
                                      "limit_per_window": item.amount,
                                      "window_seconds": item.get_expiry()}
            if per_account:
                fields["account_ref"] = key
            self.services.events.security(event, **fields)


def charge_unverified_token() -> None:
    """Spend one unit of this client's invalid-token budget now, before any work on a
    token the server cannot tell it minted; raise ``TooManyRequests`` if none is left.

    The request is not charged again if the token is then refused.
    """
    throttle: Throttle = current_app.extensions[EXTENSION_KEY]
    g.invalid_token_charged = True
    retry_after = throttle.count_invalid_token()
    if retry_after is not None:
        raise TooManyRequests(retry_after, "Too many invalid tokens from this address")


def _failed(*codes: str) -> Callable[[Response], bool]:
    """Return a ``deduct_when`` that counts only error responses with one of ``codes``."""

    def deduct_when(response: Response) -> bool:
        if response.status_code < 400:
            return False
        body = response.get_json(silent=True, force=True)
        return isinstance(body, dict) and body.get("code") in codes

    return deduct_when


def _apply_budgets(app: Flask, throttle: Throttle) -> None:
    """Wrap every view marked with :func:`limited` in its Flask-Limiter limits.

    Each budget becomes one Flask-Limiter decorator per app, so a shared budget is one
    counter across its views; limits apply innermost first, in the order declared.
    """
    limiter, s = throttle.limiter, throttle.services.settings
    key_funcs = {_PER_ACCOUNT: throttle.account_key, _PER_NAME: throttle.name_key,
                 _PER_SIGNED_IN_USER: throttle.signed_in_user_key}
    shared: dict[FailureBudget, Any] = {}
    for endpoint, view in list(app.view_functions.items()):
        budgets: tuple[FailureBudget, ...] = getattr(view, _BUDGETS_ATTR, ())
        for budget in budgets:
            deduct_when = _failed(*budget.counts)
            if budget.shared_scope is not None:
                if budget not in shared:
                    shared[budget] = limiter.shared_limit(
                        budget.limit_string(s), scope=budget.shared_scope,
                        key_func=key_funcs[budget.per], deduct_when=deduct_when)
                decorator, scope = shared[budget], budget.shared_scope
            else:
                decorator = limiter.limit(budget.limit_string(s), scope=budget.per,
                                          key_func=key_funcs.get(budget.per),
                                          deduct_when=deduct_when)
                scope = f"{endpoint}:{budget.per}"
            throttle.budgets_by_scope[scope] = budget
            view = decorator(view)
        app.view_functions[endpoint] = view
    unused = {b.label for b in BUDGETS} - {b.label for b in throttle.budgets_by_scope.values()}
    if unused:
        # A view that lost its decorator must not silently lose its limit.
        raise RuntimeError(f"failure budgets no view spends: {sorted(unused)}")


def init_app(app: Flask, svc: Services, redis_url: str) -> Throttle:
    """Build the limiter on the session Redis and apply the views' declared budgets."""
    s = svc.settings
    options: dict[str, Any] = {"key_prefix": RATE_LIMIT_KEY_PREFIX, "wrap_exceptions": True,
                               **connection_options(s)}
    throttle: Throttle

    def on_breach(limit: RequestLimit) -> None:
        throttle.on_breach(limit)

    limiter = Limiter(
        key_func=client_ip_key,
        storage_uri=_storage_uri(redis_url, s),
        storage_options=options,
        # Moving window: exact counts and an exact Retry-After; the per-key list is bounded
        # by the limit's amount.
        strategy="moving-window",
        headers_enabled=False,  # X-RateLimit-* would cost a Redis call on every response
        swallow_errors=False,  # fail closed, see the module docstring
        on_breach=on_breach,
    )
    limiter.init_app(app)
    # Every Latchkey limit is attached to its view below, and those wrappers check their
    # limits themselves. Flask-Limiter's global before_request hook would only serve
    # default or application-wide limits, which Latchkey has none of, yet it costs about
    # 200 µs on every request, the protected hot path included. So it goes.
    assert not limiter.limit_manager.default_limits
    assert not limiter.limit_manager.application_limits
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    _hooks_only_when_limited(app, limiter)
    throttle = Throttle(limiter, svc, RateLimitItemPerSecond(
        s.invalid_tokens_per_ip, s.invalid_tokens_per_ip_window_seconds))
    _apply_budgets(app, throttle)

    def _charged(error: ApiError) -> Response:
        if _token_presented() and not g.get("invalid_token_charged"):
            try:
                retry_after = throttle.count_invalid_token()
            except StorageError:
                # Not countable now: the token is refused anyway (the answer needs no store).
                _log.warning("invalid token not counted: store unavailable",
                             extra={"event": "throttle_store_unavailable"})
                retry_after = None
            if retry_after is not None:
                return problem_response(TooManyRequests(
                    retry_after, "Too many invalid tokens from this address"))
        return problem_response(error)

    @app.errorhandler(InvalidToken)
    def _invalid_token(error: InvalidToken) -> Response:
        return _charged(error)

    @app.errorhandler(InvalidDPoPProof)
    def _invalid_proof(error: InvalidDPoPProof) -> Response:
        # A bad proof with a token is a guess at the key's signature as much as a bad token
        # is one at ours: the same budget. A nonce demand is the protocol's normal first
        # answer (RFC 9449 section 8), never a failure to count.
        if proof_failure_counts(error):
            return _charged(error)
        return problem_response(error)

    app.extensions[EXTENSION_KEY] = throttle
    return throttle


def proof_failure_counts(error: InvalidDPoPProof) -> bool:
    """Say whether a refused DPoP proof spends the invalid-token budget: every refusal but
    a nonce demand (``use_dpop_nonce``), which a well-behaved client meets once a period."""
    return not isinstance(error, UseDPoPNonce)


def _hooks_only_when_limited(app: Flask, limiter: Limiter) -> None:
    """Run Flask-Limiter's after-request and teardown hooks only on a request a limit saw.

    Both start by building the limiter's per-request context, on every request, only to
    find nothing in it on a view without limits (``/v1/me`` and every protected view):
    three context lookups and a reset, tens of microseconds. The context exists only once
    a limit of this request used it, and with none there is nothing to deduct, no header
    to add and nothing to release, so skipping them then changes nothing they do.
    """
    after = app.after_request_funcs[None]
    teardown = app.teardown_request_funcs[None]
    inject_headers = vars(Limiter)["_Limiter__inject_headers"]  # name-mangled private
    inject = next(f for f in after if getattr(f, "func", None) is inject_headers)
    release = next(f for f in teardown if getattr(f, "__self__", None) is limiter)

    def inject_when_limited(response: Response) -> Response:
        if hasattr(request_ctx, _LIMITER_CONTEXT):
            result: Response = inject(response)
            return result
        return response

    def release_when_limited(error: BaseException | None = None) -> None:
        if hasattr(request_ctx, _LIMITER_CONTEXT):
            release(error)

    after[after.index(inject)] = inject_when_limited
    teardown[teardown.index(release)] = release_when_limited


# Where Flask-Limiter keeps its per-request state on the request context.
_LIMITER_CONTEXT = "_limiter_request_context"


def _token_presented() -> bool:
    """Say whether this request carried a token at all (a missing one is no guess)."""
    if g.get("bearer_presented"):
        return True
    body = request.get_json(silent=True) if request.is_json else None
    return isinstance(body, dict) and body.get("refresh_token") is not None
