"""Read, validate and hold every setting of the server in one place.

Settings come from three layers, later ones winning: the security profile's defaults, the
``LATCHKEY_*`` environment variables, then a test override passed to ``create_app``. They
are validated once at start-up, so a typo fails loudly before the first request instead of
silently weakening a timeout. Every duration carries its unit in its name.

Profile presets follow OWASP Mobile M9 for the idle timeout (15/30/60 minutes). The
absolute and access-token defaults are Latchkey's choice, justified in docs/CONFIGURATION.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PROFILES", "ConfigError", "Settings", "cluster_seed_nodes", "load_settings",
           "metrics_networks"]

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


@dataclass(frozen=True)
class Settings:
    """Validated server settings; build one with :func:`load_settings`."""

    profile: str = "medium"
    access_token_ttl_seconds: int = 300
    idle_timeout_seconds: int = 1800
    absolute_timeout_seconds: int = 86400
    refresh_reuse_grace_seconds: int = 30
    step_up_window_seconds: int = 300
    # How long an ended session's record stays to recognise replays of its tokens.
    ended_session_retention_seconds: int = 86400
    max_sessions_per_user: int = 10
    single_session: bool = False
    binding_policy: str = "report"
    allow_registration: bool = True

    redis_url: str | None = None
    # Redis Cluster: ``redis_url`` names any one node (and carries credentials and TLS);
    # the client discovers the others. Extra seed nodes (``host:port,...``) let a worker
    # start while that one node is down.
    redis_cluster: bool = False
    redis_cluster_nodes: str = ""
    instance_path: Path = field(default_factory=lambda: Path("instance").resolve())
    signing_key_file: Path | None = None
    hmac_secret_file: Path | None = None

    issuer: str = "latchkey"
    audience: str = "latchkey-api"
    # Previous signing keys stay in the JWKS this long after a rotation.
    key_retention_seconds: int = 0  # 0: derived as access_token_ttl_seconds + 60

    max_body_bytes: int = 16 * 1024
    hsts_enabled: bool = False
    hsts_max_age_seconds: int = 31536000
    trusted_proxy_count: int = 0

    # argon2id cost (RFC 9106 second recommendation: t=3, m=64 MiB, p=4).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4

    # Verified-signature cache for the hot path: size in tokens.
    jwt_cache_size: int = 20000
    redis_socket_timeout_seconds: float = 2.0
    redis_connect_timeout_seconds: float = 2.0
    # Reconnect attempts per Redis call after a lost connection (bounded, with jittered
    # exponential backoff capped below) before the request fails closed with a 503.
    redis_retries: int = 2
    redis_retry_backoff_cap_seconds: float = 0.25
    log_level: str = "INFO"

    # D2 throttling (Flask-Limiter, moving window, counted in Redis). Only failures count.
    # API.md: no looser than 10 failed logins per account per
    # 15 minutes and 100 invalid bearer tokens per client IP per minute. Per-IP limits are
    # generous because mobile carriers put many users behind one address (CGNAT).
    login_failures_per_account: int = 10
    login_failures_per_account_window_seconds: int = 900
    login_failures_per_ip: int = 100
    login_failures_per_ip_window_seconds: int = 900
    registration_failures_per_ip: int = 100
    registration_failures_per_ip_window_seconds: int = 3600
    invalid_tokens_per_ip: int = 100
    invalid_tokens_per_ip_window_seconds: int = 60

    # D4: the Redis stream of security events keeps about this many entries (XADD MAXLEN ~).
    security_stream_max_length: int = 100000
    # Who may read GET /metrics: comma-separated networks (client address after ProxyFix).
    metrics_allowed_networks: str = (
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    )
    # prometheus-client multiprocess directory under gunicorn (default: instance/prometheus).
    metrics_dir: Path | None = None

    # gunicorn (serving.py; see docs/OPERATIONS.md).
    worker_timeout_seconds: int = 30
    graceful_timeout_seconds: int = 20
    keepalive_seconds: int = 5
    # gunicorn's own access log (the app always writes its redacted JSON access log).
    gunicorn_access_log: bool = False

    @property
    def signing_key_retention_seconds(self) -> int:
        """Return how long a retired key must still verify tokens it signed."""
        return self.key_retention_seconds or self.access_token_ttl_seconds + 60


# Environment variable (without prefix) -> Settings attribute.
_ENV_NAMES: dict[str, str] = {
    "PROFILE": "profile",
    "ACCESS_TOKEN_TTL": "access_token_ttl_seconds",
    "IDLE_TIMEOUT": "idle_timeout_seconds",
    "ABSOLUTE_TIMEOUT": "absolute_timeout_seconds",
    "REFRESH_REUSE_GRACE": "refresh_reuse_grace_seconds",
    "STEP_UP_WINDOW": "step_up_window_seconds",
    "ENDED_SESSION_RETENTION": "ended_session_retention_seconds",
    "MAX_SESSIONS_PER_USER": "max_sessions_per_user",
    "SINGLE_SESSION": "single_session",
    "BINDING_POLICY": "binding_policy",
    "ALLOW_REGISTRATION": "allow_registration",
    "REDIS_URL": "redis_url",
    "REDIS_CLUSTER": "redis_cluster",
    "REDIS_CLUSTER_NODES": "redis_cluster_nodes",
    "INSTANCE_PATH": "instance_path",
    "SIGNING_KEY_FILE": "signing_key_file",
    "HMAC_SECRET_FILE": "hmac_secret_file",
    "ISSUER": "issuer",
    "AUDIENCE": "audience",
    "KEY_RETENTION": "key_retention_seconds",
    "HSTS": "hsts_enabled",
    "HSTS_MAX_AGE": "hsts_max_age_seconds",
    "TRUSTED_PROXIES": "trusted_proxy_count",
    "ARGON2_TIME_COST": "argon2_time_cost",
    "ARGON2_MEMORY_KIB": "argon2_memory_kib",
    "ARGON2_PARALLELISM": "argon2_parallelism",
    "JWT_CACHE_SIZE": "jwt_cache_size",
    "LOG_LEVEL": "log_level",
    "REDIS_RETRIES": "redis_retries",
    "REDIS_RETRY_BACKOFF_CAP": "redis_retry_backoff_cap_seconds",
    "LOGIN_FAILURES_PER_ACCOUNT": "login_failures_per_account",
    "LOGIN_FAILURES_PER_ACCOUNT_WINDOW": "login_failures_per_account_window_seconds",
    "LOGIN_FAILURES_PER_IP": "login_failures_per_ip",
    "LOGIN_FAILURES_PER_IP_WINDOW": "login_failures_per_ip_window_seconds",
    "REGISTRATION_FAILURES_PER_IP": "registration_failures_per_ip",
    "REGISTRATION_FAILURES_PER_IP_WINDOW": "registration_failures_per_ip_window_seconds",
    "INVALID_TOKENS_PER_IP": "invalid_tokens_per_ip",
    "INVALID_TOKENS_PER_IP_WINDOW": "invalid_tokens_per_ip_window_seconds",
    "SECURITY_STREAM_MAX_LENGTH": "security_stream_max_length",
    "METRICS_ALLOWED_NETWORKS": "metrics_allowed_networks",
    "METRICS_DIR": "metrics_dir",
    "WORKER_TIMEOUT": "worker_timeout_seconds",
    "GRACEFUL_TIMEOUT": "graceful_timeout_seconds",
    "KEEPALIVE": "keepalive_seconds",
    "GUNICORN_ACCESS_LOG": "gunicorn_access_log",
}

_PROFILE_FIELDS = {f.name for f in fields(Profile)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Convert one raw value to the type of the attribute's default."""
    if raw is None:
        return None
    kind = {f.name: f.type for f in fields(Settings)}[name]
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
        raise ConfigError(f"setting {name!r} has an invalid value") from exc


def _validate(s: Settings) -> None:
    """Reject settings that would make sessions unsafe or the server unusable."""
    positive = (
        "access_token_ttl_seconds",
        "idle_timeout_seconds",
        "absolute_timeout_seconds",
        "step_up_window_seconds",
        "max_sessions_per_user",
        "max_body_bytes",
        "argon2_time_cost",
        "argon2_memory_kib",
        "argon2_parallelism",
        "jwt_cache_size",
        "login_failures_per_account",
        "login_failures_per_account_window_seconds",
        "login_failures_per_ip",
        "login_failures_per_ip_window_seconds",
        "registration_failures_per_ip",
        "registration_failures_per_ip_window_seconds",
        "invalid_tokens_per_ip",
        "invalid_tokens_per_ip_window_seconds",
        "security_stream_max_length",
        "worker_timeout_seconds",
        "graceful_timeout_seconds",
    )
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if s.refresh_reuse_grace_seconds < 0 or s.refresh_reuse_grace_seconds > 300:
        raise ConfigError("refresh_reuse_grace_seconds must be between 0 and 300")
    if s.idle_timeout_seconds > s.absolute_timeout_seconds:
        raise ConfigError("idle_timeout_seconds cannot exceed absolute_timeout_seconds")
    if s.access_token_ttl_seconds > s.idle_timeout_seconds:
        raise ConfigError("access_token_ttl_seconds cannot exceed idle_timeout_seconds")
    if 0 < s.key_retention_seconds < s.access_token_ttl_seconds:
        # A retired key must verify every token it signed, or rotation logs people out.
        raise ConfigError("key_retention_seconds cannot be shorter than the access token TTL")
    if s.binding_policy not in BINDING_POLICIES:
        raise ConfigError(f"binding_policy must be one of {', '.join(BINDING_POLICIES)}")
    if s.trusted_proxy_count < 0:
        raise ConfigError("trusted_proxy_count cannot be negative")
    if s.redis_retries < 0 or s.redis_retry_backoff_cap_seconds < 0:
        raise ConfigError("redis_retries and redis_retry_backoff_cap_seconds cannot be negative")
    if s.keepalive_seconds < 0:
        raise ConfigError("keepalive_seconds cannot be negative")
    _validate_cluster(s)
    try:
        metrics_networks(s)
    except ValueError as exc:
        raise ConfigError("metrics_allowed_networks must be a list of networks") from exc


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
    environ: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build validated settings from the profile, the environment and explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for env_name, attr in _ENV_NAMES.items():
        if ENV_PREFIX + env_name in env:
            values[attr] = env[ENV_PREFIX + env_name]
    for key, value in (overrides or {}).items():
        if key not in {f.name for f in fields(Settings)}:
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
        merged[attr] = _coerce(attr, raw, getattr(Settings, attr, None))
    settings = replace(Settings(), **merged)
    _validate(settings)
    return settings
