"""Read, validate and hold every setting of the server in one place.

Settings come from three layers, later ones winning: the security profile's defaults, the
``LATCHKEY_*`` environment variables, then a test override passed to ``create_app`` (the
CLI passes ``--host``/``--port``/``--workers``/``--threads`` the same way). They are
validated once at start-up, so a typo fails loudly before the first request instead of
silently weakening a timeout. Every duration carries its unit in its name.

Each setting is declared once, as a field of :class:`Settings` made by :func:`setting`:
its environment variable, default, unit, bounds and meaning sit on that one line, as
flask-jwt-extended's and pydantic-settings' fields carry theirs. The loader, the bounds
check and the table in docs/CONFIGURATION.md (checked by tests/test_docs_stay_true.py)
all read :data:`SETTINGS`, which is derived from those declarations, so a field cannot
exist without a variable, a variable without a field, or either without documentation.
No library: a dataclass field's ``metadata`` holds all of it, and pydantic-settings
would bring a dependency for what is here one small helper.

Profile presets follow OWASP Mobile M9 for the idle timeout (15/30/60 minutes). The
absolute and access-token defaults are Latchkey's choice, justified in docs/CONFIGURATION.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CLIENT_ID_RE", "ENV_PREFIX", "PROFILES", "SETTINGS", "ConfigError", "SettingSpec",
           "Settings", "cluster_seed_nodes", "is_loopback_host", "load_settings",
           "metrics_networks", "setting"]

ENV_PREFIX = "LATCHKEY_"


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe; raised at start-up, never per request."""


@dataclass(frozen=True)
class Profile:
    """The timeouts a security profile sets before any explicit override."""

    access_token_ttl_seconds: int
    idle_timeout_seconds: int
    absolute_timeout_seconds: int
    step_up_window_seconds: int


PROFILES: dict[str, Profile] = {
    # High: banking-grade. Short access tokens bound how long a stolen one is useful.
    "high": Profile(120, 15 * 60, 8 * 3600, 120),
    # Medium: the default for most apps.
    "medium": Profile(300, 30 * 60, 24 * 3600, 300),
    # Low: content apps where a sign-in a week is acceptable.
    "low": Profile(600, 60 * 60, 7 * 24 * 3600, 600),
}

BINDING_POLICIES = ("off", "report", "enforce")
SERVERS = ("gunicorn", "granian")
DPOP_MODES = ("off", "allowed", "required")

_SPEC_KEY = "latchkey_setting"


@dataclass(frozen=True)
class SettingSpec:
    """Everything declared about one setting, as the loader and the docs see it."""

    name: str  # the Settings attribute
    env: str  # the variable without ENV_PREFIX, as docs/CONFIGURATION.md lists it
    kind: str  # the annotation: bool, int, float, str, str | None, Path, Path | None
    unit: str  # "" for flags, names and other unitless values
    doc: str
    shown_default: str  # how docs/CONFIGURATION.md states the default
    minimum: float | None
    maximum: float | None

    @property
    def variable(self) -> str:
        """Return the full environment variable name."""
        return ENV_PREFIX + self.env


def setting(env: str, default: Any = MISSING, *, doc: str, unit: str = "",
            shown_default: str | None = None, minimum: float | None = None,
            maximum: float | None = None, default_factory: Any = MISSING) -> Any:
    """Declare one setting: its variable, default, unit, bounds and meaning together.

    Returns a dataclass field, so the default stays where Python readers expect it.
    ``shown_default`` is for defaults a literal would misstate (derived or per profile).
    """
    declared = {"env": env, "unit": unit, "doc": doc, "shown_default": shown_default,
                "minimum": minimum, "maximum": maximum}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={_SPEC_KEY: declared})
    return field(default=default, metadata={_SPEC_KEY: declared})


_SET_BY_PROFILE = "profile"  # the doc's default for the timeouts a profile sets


@dataclass(frozen=True)
class Settings:
    """Validated server settings; build one with :func:`load_settings`."""

    profile: str = setting("PROFILE", "medium", doc="preset above")
    access_token_ttl_seconds: int = setting(
        "ACCESS_TOKEN_TTL", 300, unit="seconds", shown_default=_SET_BY_PROFILE, minimum=1,
        doc="access token lifetime (≤ idle timeout)")
    idle_timeout_seconds: int = setting(
        "IDLE_TIMEOUT", 1800, unit="seconds", shown_default=_SET_BY_PROFILE, minimum=1,
        doc="time without any request before the session ends (≤ absolute)")
    absolute_timeout_seconds: int = setting(
        "ABSOLUTE_TIMEOUT", 86400, unit="seconds", shown_default=_SET_BY_PROFILE, minimum=1,
        doc="time from sign-in after which the session ends regardless")
    refresh_reuse_grace_seconds: int = setting(
        "REFRESH_REUSE_GRACE", 30, unit="seconds", minimum=0, maximum=300,
        doc="a retry of the previous refresh token within this time gets the same successor "
            "(0 to 300)")
    step_up_window_seconds: int = setting(
        "STEP_UP_WINDOW", 300, unit="seconds", shown_default=_SET_BY_PROFILE, minimum=1,
        doc="how long an elevated session may do sensitive actions")
    ended_session_retention_seconds: int = setting(
        "ENDED_SESSION_RETENTION", 86400, unit="seconds",
        doc="how long an ended session's record stays, so replays of its tokens are "
            "recognised and answered with the reason (at most the 40 most recent ended "
            "sessions per user are kept; records past retention are dropped when the user's "
            "sessions are next walked, and by `latchkey-server sessions sweep`)")
    max_sessions_per_user: int = setting(
        "MAX_SESSIONS_PER_USER", 10, unit="sessions", minimum=1,
        doc="live sessions per user; the oldest is evicted")
    single_session: bool = setting(
        "SINGLE_SESSION", False, doc="a new sign-in ends the previous session")
    binding_policy: str = setting(
        "BINDING_POLICY", "report",
        doc="`off`, `report` or `enforce` a change of device mid-session")
    dpop: str = setting(
        "DPOP", "allowed",
        doc="DPoP (RFC 9449): `off` ignores proofs; `allowed` binds a session to the key of "
            "the proof its token request carries; `required` refuses token requests "
            "without one (docs/API-NOTES.md). Every `DPOP_*` setting is published in "
            "`lk:{policy}`, and resource servers follow it")
    dpop_iat_window_seconds: int = setting(
        "DPOP_IAT_WINDOW", 60, unit="seconds", minimum=1, maximum=600,
        doc="how far a DPoP proof's `iat` may be from server time; each `jti` is "
            "remembered for twice this")
    dpop_nonce: str = setting(
        "DPOP_NONCE", "off",
        doc="`on`: proofs must carry a server nonce (`DPoP-Nonce`, error `use_dpop_nonce`), "
            "derived from the HMAC secret and the clock, so every worker agrees; resource "
            "servers check the same nonces (its nonce subkey is published in `lk:{policy}`, "
            "docs/RESOURCE_SERVERS.md)")
    dpop_nonce_period_seconds: int = setting(
        "DPOP_NONCE_PERIOD", 300, unit="seconds", minimum=10, maximum=86400,
        doc="how often the DPoP nonce changes (the previous one stays valid one more period)")
    dpop_theft_policy: str = setting(
        "DPOP_STOLEN_TOKEN", "report",
        doc="a DPoP-bound token presented without its key: `report` (the security event; "
            "the session stays live, the key holder still uses it) or `revoke` (the event, "
            "and the session ends with reason `stolen`)")
    dpop_jti_limit: int = setting(
        "DPOP_JTI_LIMIT", 2000, unit="proofs", minimum=10,
        doc="DPoP `jti`s remembered per user at once (each for twice the iat window); a "
            "proof beyond it is refused, so only the key holder can be slowed by it")
    allow_registration: bool = setting(
        "ALLOW_REGISTRATION", True, doc="`POST /v1/auth/register` on or off")
    admin_http: bool = setting(
        "ADMIN_HTTP", False,
        doc="serve the admin HTTP view (`/v1/admin/...`, D5) and list it in `/openapi.json`; "
            "off, those paths do not exist (the CLI is always there)")

    redis_url: str | None = setting(
        "REDIS_URL", None, shown_default="unset: embedded Redis",
        doc="`redis://`, `rediss://` or `unix://` URL of the session store")
    # Redis Cluster: ``redis_url`` names any one node (and carries credentials and TLS);
    # the client discovers the others. Extra seed nodes (``host:port,...``) let a worker
    # start while that one node is down.
    redis_cluster: bool = setting(
        "REDIS_CLUSTER", False,
        doc="the store is a Redis Cluster: `REDIS_URL` (`redis://` or `rediss://`, database "
            "0) names any one node and carries the credentials and TLS; the other nodes are "
            "discovered from it. See SCALING.md")
    redis_cluster_nodes: str = setting(
        "REDIS_CLUSTER_NODES", "",
        doc="more seed nodes, `host:port,host:port`, so a worker can start while the "
            "`REDIS_URL` node is down (needs `REDIS_CLUSTER`)")
    instance_path: Path = setting(  # noqa: RUF009 - setting() is a field
        "INSTANCE_PATH", default_factory=lambda: Path("instance").resolve(),
        shown_default="`./instance`", doc="keys, embedded Redis data")
    signing_key_file: Path | None = setting(  # noqa: RUF009 - setting() is a field
        "SIGNING_KEY_FILE", None,
        doc="an Ed25519 PKCS#8 PEM to sign with (instead of generated keys)")
    hmac_secret_file: Path | None = setting(  # noqa: RUF009 - setting() is a field
        "HMAC_SECRET_FILE", None, doc="≥ 32 bytes (raw or hex) for refresh-token hashing")

    issuer: str = setting(
        "ISSUER", "", shown_default="`http://<host>:<port>` when the host is loopback",
        doc="the public base URL: the access tokens' `iss`, the RFC 8414 metadata's `issuer` "
            "and the base of its endpoint URLs (https; http only for a loopback host; no "
            "query, fragment or trailing slash). Unset, it is derived for the quick start "
            "from `HOST` and `PORT`, and start-up fails on a non-loopback host: a verifier "
            "must see the URL clients use (docs/OAUTH.md)")
    default_client_id: str = setting(
        "DEFAULT_CLIENT_ID", "latchkey-app",
        doc="the built-in public OAuth client `/v1` logins are issued to: the access "
            "token's `client_id`, and the client that may refresh them at `/oauth/token`")
    audience: str = setting("AUDIENCE", "latchkey-api", doc="JWT `aud`")
    key_retention_seconds: int = setting(
        "KEY_RETENTION", 0, unit="seconds", shown_default="access TTL + 60", minimum=0,
        doc="how long a retired signing key stays in the JWKS (0: access TTL + 60)")

    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", 16 * 1024, unit="bytes", minimum=1,
        doc="largest request body accepted; larger ones get 413")
    hsts_enabled: bool = setting(
        "HSTS", False, doc="send HSTS even when TLS is terminated by a proxy")
    hsts_max_age_seconds: int = setting(
        "HSTS_MAX_AGE", 31536000, unit="seconds", doc="HSTS `max-age`")
    trusted_proxy_count: int = setting(
        "TRUSTED_PROXIES", 0, unit="proxies", minimum=0,
        doc="how many proxies' `X-Forwarded-*` headers to trust")

    # argon2id cost (RFC 9106 second recommendation: t=3, m=64 MiB, p=4).
    argon2_time_cost: int = setting(
        "ARGON2_TIME_COST", 3, unit="passes", minimum=1,
        doc="argon2id time cost (RFC 9106's second recommended setting)")
    argon2_memory_kib: int = setting(
        "ARGON2_MEMORY_KIB", 65536, unit="KiB", minimum=1,
        doc="argon2id memory per hash (RFC 9106's second recommended setting)")
    argon2_parallelism: int = setting(
        "ARGON2_PARALLELISM", 4, unit="lanes", minimum=1,
        doc="argon2id parallelism (RFC 9106's second recommended setting)")

    jwt_cache_size: int = setting(
        "JWT_CACHE_SIZE", 20000, unit="tokens", minimum=1,
        doc="verified access tokens cached per worker (see DESIGN.md)")
    redis_socket_timeout_seconds: float = setting(
        "REDIS_SOCKET_TIMEOUT", 2.0, unit="seconds",
        doc="longest wait for a Redis reply before the request fails closed with 503")
    redis_connect_timeout_seconds: float = setting(
        "REDIS_CONNECT_TIMEOUT", 2.0, unit="seconds",
        doc="longest wait for a Redis connection before the request fails closed with 503")
    redis_retries: int = setting(
        "REDIS_RETRIES", 2, unit="retries", minimum=0,
        doc="reconnect attempts per Redis call after a lost connection, with jittered "
            "backoff (never on timeouts); past them the request fails closed with 503")
    redis_retry_backoff_cap_seconds: float = setting(
        "REDIS_RETRY_BACKOFF_CAP", 0.25, unit="seconds", minimum=0,
        doc="the longest backoff between those reconnect attempts")
    log_level: str = setting("LOG_LEVEL", "INFO", doc="server log level")
    # L1: a revocation is durable before it is answered (durability.py, docs/OPERATIONS.md).
    revocation_durability: str = setting(
        "REVOCATION_DURABILITY", "auto",
        doc="`auto`: before answering a revocation, wait until the store confirms it "
            "(`WAITAOF` fsync where the engine has it, `WAIT` for replicas); `off`: answer "
            "after the in-memory write, as Redis does by default")
    revocation_replicas: str = setting(
        "REVOCATION_REPLICAS", "auto", unit="replicas",
        doc="replicas a revocation must reach before it is answered (`WAIT n`); `auto`: 1 "
            "when the store's master has a replica connected when it is first used, else 0")
    revocation_wait_timeout_seconds: float = setting(
        "REVOCATION_WAIT_TIMEOUT", 1.5, unit="seconds", minimum=0.001,
        doc="longest wait for that confirmation (each of `WAIT`, `WAITAOF`); below "
            "`REDIS_SOCKET_TIMEOUT`")
    revocation_unconfirmed: str = setting(
        "REVOCATION_UNCONFIRMED", "fail",
        doc="when the store does not confirm in time: `fail` answers 503 `store_unavailable` "
            "(the session is ended in memory; a retry confirms again), `report` answers as "
            "usual; both raise the `revocation_unconfirmed` security event")

    # D2 throttling (Flask-Limiter, moving window, counted in Redis). Only failures count.
    # API.md: no looser than 10 failed logins per account per
    # 15 minutes and 100 invalid bearer tokens per client IP per minute. Per-IP limits are
    # generous because mobile carriers put many users behind one address (CGNAT).
    login_failures_per_account: int = setting(
        "LOGIN_FAILURES_PER_ACCOUNT", 10, unit="failures", minimum=1,
        doc="failed logins (and wrong step-up passwords) per account per window before 429")
    login_failures_per_account_window_seconds: int = setting(
        "LOGIN_FAILURES_PER_ACCOUNT_WINDOW", 900, unit="seconds", minimum=1,
        doc="the window of `LOGIN_FAILURES_PER_ACCOUNT`")
    login_failures_per_ip: int = setting(
        "LOGIN_FAILURES_PER_IP", 100, unit="failures", minimum=1,
        doc="failed logins (and wrong step-up passwords) per client IP per window "
            "(generous: carriers put many users behind one IP)")
    login_failures_per_ip_window_seconds: int = setting(
        "LOGIN_FAILURES_PER_IP_WINDOW", 900, unit="seconds", minimum=1,
        doc="the window of `LOGIN_FAILURES_PER_IP`")
    registration_failures_per_name: int = setting(
        "REGISTRATION_FAILURES_PER_NAME", 10, unit="failures", minimum=1,
        doc="registrations of one taken name (any case) per window; a budget of its own, "
            "so probing a name never spends its owner's login budget")
    registration_failures_per_name_window_seconds: int = setting(
        "REGISTRATION_FAILURES_PER_NAME_WINDOW", 3600, unit="seconds", minimum=1,
        doc="the window of `REGISTRATION_FAILURES_PER_NAME`")
    registration_failures_per_ip: int = setting(
        "REGISTRATION_FAILURES_PER_IP", 100, unit="failures", minimum=1,
        doc="registrations that hit a taken name, per client IP per window")
    registration_failures_per_ip_window_seconds: int = setting(
        "REGISTRATION_FAILURES_PER_IP_WINDOW", 3600, unit="seconds", minimum=1,
        doc="the window of `REGISTRATION_FAILURES_PER_IP`")
    invalid_tokens_per_ip: int = setting(
        "INVALID_TOKENS_PER_IP", 100, unit="tokens", minimum=1,
        doc="invalid or unknown bearer/refresh tokens per client IP per window")
    invalid_tokens_per_ip_window_seconds: int = setting(
        "INVALID_TOKENS_PER_IP_WINDOW", 60, unit="seconds", minimum=1,
        doc="the window of `INVALID_TOKENS_PER_IP`")

    security_stream_max_length: int = setting(
        "SECURITY_STREAM_MAX_LENGTH", 100000, unit="entries", minimum=1,
        doc="approximate length each Redis stream of security events (alerts, noise) is "
            "trimmed to (D4, `XADD MAXLEN ~`)")
    security_events_per_source: int = setting(
        "SECURITY_EVENTS_PER_SOURCE", 3, unit="events", minimum=1,
        doc="security events of one kind written per source (session, account or client "
            "address) per window; after that only summaries with counts (H2)")
    security_event_window_seconds: int = setting(
        "SECURITY_EVENT_WINDOW", 60, unit="seconds", minimum=1,
        doc="the window of `SECURITY_EVENTS_PER_SOURCE`")
    metrics_allowed_networks: str = setting(
        "METRICS_ALLOWED_NETWORKS",
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        shown_default="loopback and private ranges",
        doc="who may read `GET /metrics` (comma-separated networks, matched against the "
            "client address after the trusted proxies)")
    metrics_dir: Path | None = setting(  # noqa: RUF009 - setting() is a field
        "METRICS_DIR", None, shown_default="`<instance>/prometheus`",
        doc="prometheus-client's multiprocess directory under gunicorn")

    # Serving (cli.py, serving.py; see docs/OPERATIONS.md). The CLI flags win over these.
    server: str = setting(
        "SERVER", "gunicorn",
        doc="the production WSGI server: `gunicorn` (gthread workers) or `granian` (a "
            "compiled HTTP server; `--server` wins). What each enforces is in "
            "docs/OPERATIONS.md")
    host: str = setting("HOST", "127.0.0.1", doc="address to bind (`--host` wins)")
    port: int = setting("PORT", 8000, unit="port", minimum=1, maximum=65535,
                        doc="port to bind (`--port` wins)")
    workers: int = setting("WORKERS", 2, unit="processes", minimum=1,
                           doc="gunicorn worker processes (`--workers` wins)")
    threads: int = setting("THREADS", 8, unit="threads", minimum=1,
                           doc="threads per gunicorn worker (`--threads` wins)")
    worker_timeout_seconds: int = setting(
        "WORKER_TIMEOUT", 30, unit="seconds", minimum=1,
        doc="gunicorn worker timeout (docs/OPERATIONS.md)")
    graceful_timeout_seconds: int = setting(
        "GRACEFUL_TIMEOUT", 20, unit="seconds", minimum=1,
        doc="gunicorn graceful shutdown time (docs/OPERATIONS.md)")
    keepalive_seconds: int = setting(
        "KEEPALIVE", 5, unit="seconds", minimum=0,
        doc="gunicorn keep-alive (docs/OPERATIONS.md)")
    gunicorn_access_log: bool = setting(
        "GUNICORN_ACCESS_LOG", False,
        doc="also write gunicorn's own access log (redacted: no query values, headers or "
            "bodies); the app always writes its JSON access log")

    @property
    def signing_key_retention_seconds(self) -> int:
        """Return how long a retired key must still verify tokens it signed."""
        return self.key_retention_seconds or self.access_token_ttl_seconds + 60


def _shown_default(f: Any) -> str:
    """Return the default as docs/CONFIGURATION.md states it: the literal in backticks."""
    declared = f.metadata[_SPEC_KEY]
    if declared["shown_default"] is not None:
        return str(declared["shown_default"])
    value = f.default
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _spec(f: Any) -> SettingSpec:
    declared = f.metadata.get(_SPEC_KEY)
    if declared is None:
        # A field made without setting() would be a setting with no variable: the drift
        # this module exists to prevent.
        raise TypeError(f"Settings.{f.name} must be declared with setting()")
    return SettingSpec(f.name, declared["env"], str(f.type), declared["unit"],
                       declared["doc"], _shown_default(f), declared["minimum"],
                       declared["maximum"])


#: Every setting, in declaration order, derived from the fields of :class:`Settings`.
SETTINGS: tuple[SettingSpec, ...] = tuple(_spec(f) for f in fields(Settings))
_BY_NAME: dict[str, SettingSpec] = {s.name: s for s in SETTINGS}
if len({s.env for s in SETTINGS}) != len(SETTINGS):  # pragma: no cover - a typo at import
    raise TypeError("two settings declare the same environment variable")

_PROFILE_FIELDS = {f.name for f in fields(Profile)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(spec: SettingSpec, raw: Any) -> Any:
    """Convert one raw value (text from the environment, or an override) to its declared type."""
    if raw is None:
        return None
    kind = spec.kind
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(text)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind in ("Path", "Path | None"):
            return Path(raw).expanduser().resolve() if raw != "" else None
        if kind == "str | None":
            return str(raw) or None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {spec.name!r} has an invalid value") from exc


def _check_bounds(s: Settings) -> None:
    """Enforce each setting's declared ``minimum`` and ``maximum``."""
    for spec in SETTINGS:
        low, high, value = spec.minimum, spec.maximum, getattr(s, spec.name)
        if high is not None and low is not None and not low <= value <= high:
            raise ConfigError(f"{spec.name} must be between {low:g} and {high:g}")
        if low is not None and value < low:
            raise ConfigError(f"{spec.name} must be positive" if low == 1
                              else f"{spec.name} cannot be negative" if low == 0
                              else f"{spec.name} must be at least {low:g}")


def _validate(s: Settings) -> None:
    """Reject settings that would make sessions unsafe or the server unusable."""
    _check_bounds(s)
    if s.idle_timeout_seconds > s.absolute_timeout_seconds:
        raise ConfigError("idle_timeout_seconds cannot exceed absolute_timeout_seconds")
    if s.access_token_ttl_seconds > s.idle_timeout_seconds:
        raise ConfigError("access_token_ttl_seconds cannot exceed idle_timeout_seconds")
    if 0 < s.key_retention_seconds < s.access_token_ttl_seconds:
        # A retired key must verify every token it signed, or rotation logs people out.
        raise ConfigError("key_retention_seconds cannot be shorter than the access token TTL")
    if s.binding_policy not in BINDING_POLICIES:
        raise ConfigError(f"binding_policy must be one of {', '.join(BINDING_POLICIES)}")
    if s.dpop not in DPOP_MODES:
        raise ConfigError(f"dpop must be one of {', '.join(DPOP_MODES)}")
    if s.dpop_nonce not in ("off", "on"):
        raise ConfigError("dpop_nonce must be off or on")
    if s.dpop_theft_policy not in ("report", "revoke"):
        raise ConfigError("dpop_theft_policy must be report or revoke")
    if s.server not in SERVERS:
        raise ConfigError(f"server must be one of {', '.join(SERVERS)}")
    if not s.host.strip():
        raise ConfigError("host cannot be empty")
    _validate_issuer(s.issuer)
    if not CLIENT_ID_RE.fullmatch(s.default_client_id):
        raise ConfigError("default_client_id must be 1-64 letters, digits or ._-")
    if s.revocation_durability not in ("auto", "off"):
        raise ConfigError("revocation_durability must be auto or off")
    if s.revocation_unconfirmed not in ("fail", "report"):
        raise ConfigError("revocation_unconfirmed must be fail or report")
    if s.revocation_replicas != "auto" and not s.revocation_replicas.isdigit():
        raise ConfigError("revocation_replicas must be auto or a number of replicas")
    if s.revocation_wait_timeout_seconds >= s.redis_socket_timeout_seconds:
        # WAIT blocks the connection: a longer wait would be cut off as a lost Redis.
        raise ConfigError("revocation_wait_timeout_seconds must be below "
                          "redis_socket_timeout_seconds")
    _validate_cluster(s)
    try:
        metrics_networks(s)
    except ValueError as exc:
        raise ConfigError("metrics_allowed_networks must be a list of networks") from exc


# Client ids (the built-in one and registered ones): short, URL- and header-safe.
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback_host(host: str) -> bool:
    """Say whether ``host`` names this machine only (where plain http is acceptable)."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _derived_issuer(host: str, port: int) -> str:
    """Return the quick start's issuer: the loopback URL the server is bound to.

    Anything else would be a guess at the URL clients use (a proxy, a DNS name), and a
    wrong ``iss`` makes every verifier refuse every token, so it must be configured.
    """
    if not is_loopback_host(host):
        raise ConfigError("set LATCHKEY_ISSUER to the server's public https URL: it cannot "
                          "be derived for a non-loopback host")
    host = host.strip()
    return f"http://[{host.strip('[]')}]:{port}" if ":" in host else f"http://{host}:{port}"


def _validate_issuer(issuer: str) -> None:
    """Check RFC 8414 section 2's rules for an issuer, and https off loopback."""
    url = urlsplit(issuer)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError("issuer must be an absolute https URL")
    if url.scheme == "http" and not is_loopback_host(url.hostname):
        raise ConfigError("issuer must use https (http only on a loopback host)")
    if url.query or url.fragment or "?" in issuer or "#" in issuer or issuer.endswith("/"):
        raise ConfigError("issuer must have no query, fragment or trailing slash")


def _validate_cluster(s: Settings) -> None:
    """Check the Redis Cluster settings: a TCP URL of one node, seeds as ``host:port``."""
    if s.redis_cluster_nodes and not s.redis_cluster:
        raise ConfigError("redis_cluster_nodes needs redis_cluster")
    if not s.redis_cluster:
        return
    url = urlsplit(s.redis_url or "")
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        # The embedded default and unix sockets are single-node by nature.
        raise ConfigError("redis_cluster needs redis_url to name a node: redis:// or rediss://")
    if url.path.strip("/") not in ("", "0"):
        raise ConfigError("a Redis Cluster has only database 0")
    try:
        cluster_seed_nodes(s)
    except ValueError as exc:
        raise ConfigError("redis_cluster_nodes must be a list of host:port") from exc


def cluster_seed_nodes(s: Settings) -> list[tuple[str, int]]:
    """Return the cluster nodes to discover the cluster from: the URL's, then the extras."""
    url = urlsplit(s.redis_url or "")
    nodes = [(url.hostname or "", url.port or 6379)]
    for part in s.redis_cluster_nodes.split(","):
        if part.strip():
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not 0 < int(port) < 65536:
                raise ValueError(part)
            nodes.append((host.strip("[]"), int(port)))
    return nodes


def metrics_networks(s: Settings) -> tuple[IPv4Network | IPv6Network, ...]:
    """Return the networks allowed to read ``/metrics`` (empty: nobody)."""
    return tuple(ip_network(part.strip(), strict=False)
                 for part in s.metrics_allowed_networks.split(",") if part.strip())


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build validated settings from the profile, the environment and explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: env[s.variable] for s in SETTINGS if s.variable in env}
    for key, value in (overrides or {}).items():
        if key not in _BY_NAME:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = value

    profile_name = str(values.get("profile", "medium")).strip().lower()
    if profile_name not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}")
    merged: dict[str, Any] = {
        name: getattr(PROFILES[profile_name], name) for name in _PROFILE_FIELDS
    }
    merged["profile"] = profile_name
    for attr, raw in values.items():
        if attr == "profile":
            continue
        merged[attr] = _coerce(_BY_NAME[attr], raw)
    settings = replace(Settings(), **merged)
    if not settings.issuer:
        settings = replace(settings, issuer=_derived_issuer(settings.host, settings.port))
    _validate(settings)
    return settings
