"""Unit proof for token shapes (T1, T3, T4, T5) and configuration (L2 presets, and every
setting read from its declared variable, bounded and typed as declared)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from latchkey_server.cli import build_parser, main, serving_settings
from latchkey_server.config import PROFILES, SETTINGS, ConfigError, Settings, load_settings
from latchkey_server.errors import InvalidToken, TokenExpired
from latchkey_server.keys import HmacKeys, KeyRing
from latchkey_server.tokens import (
    RefreshToken,
    TokenService,
    looks_like_token,
    new_session_id,
    new_user_id,
)


@pytest.fixture
def service(tmp_path):
    settings = load_settings({}, {"instance_path": tmp_path})
    return TokenService(settings, KeyRing(settings), HmacKeys(settings))


def test_profiles_follow_m9_idle_presets():
    assert PROFILES["high"].idle_timeout_seconds == 15 * 60
    assert PROFILES["medium"].idle_timeout_seconds == 30 * 60
    assert PROFILES["low"].idle_timeout_seconds == 60 * 60


def test_environment_overrides_profile_and_is_validated():
    s = load_settings({"LATCHKEY_PROFILE": "high", "LATCHKEY_IDLE_TIMEOUT": "600"})
    assert s.idle_timeout_seconds == 600 and s.access_token_ttl_seconds == 120
    with pytest.raises(ConfigError):
        load_settings({"LATCHKEY_IDLE_TIMEOUT": "abc"})
    with pytest.raises(ConfigError):
        load_settings({"LATCHKEY_PROFILE": "extreme"})
    with pytest.raises(ConfigError):
        load_settings({"LATCHKEY_IDLE_TIMEOUT": "100", "LATCHKEY_ABSOLUTE_TIMEOUT": "50"})
    with pytest.raises(ConfigError):
        load_settings({"LATCHKEY_BINDING_POLICY": "maybe"})
    with pytest.raises(ConfigError):
        load_settings({"LATCHKEY_ACCESS_TOKEN_TTL": "300", "LATCHKEY_KEY_RETENTION": "60"})


# Values whose cross-field rules a generic "default plus one" would break, and the
# companions a value needs to be valid at all.
_SAMPLES = {"profile": "high", "binding_policy": "enforce", "key_retention_seconds": "600",
            "redis_url": "redis://10.0.0.1:7000/0", "metrics_allowed_networks": "10.0.0.0/8",
            "redis_cluster_nodes": "10.0.0.2:7001", "host": "10.1.2.3", "port": "9000",
            "log_level": "DEBUG", "issuer": "https://auth.example.com",
            "revocation_durability": "off", "revocation_replicas": "1",
            "revocation_wait_timeout_seconds": "0.5", "revocation_unconfirmed": "report",
            "dpop": "required", "dpop_nonce": "on", "dpop_theft_policy": "revoke",
            "server": "granian"}
_COMPANIONS = {"host": {"LATCHKEY_ISSUER": "https://auth.example.com"},
               "redis_cluster": {"LATCHKEY_REDIS_URL": "redis://10.0.0.1:7000/0"},
               "redis_cluster_nodes": {"LATCHKEY_REDIS_URL": "redis://10.0.0.1:7000/0",
                                       "LATCHKEY_REDIS_CLUSTER": "true"}}


def _other_value(spec, tmp_path) -> str:
    """Return text for ``spec``'s variable that is valid and differs from its default."""
    default = getattr(Settings(), spec.name)
    if spec.name in _SAMPLES:
        return _SAMPLES[spec.name]
    if spec.kind == "bool":
        return "false" if default else "true"
    if spec.kind in ("int", "float"):
        return str(default + 1)
    if spec.kind.startswith("Path"):
        return str(tmp_path / spec.name)
    return f"{default}-other"


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.variable)
def test_every_setting_is_read_from_its_declared_variable(spec, tmp_path):
    raw = _other_value(spec, tmp_path)
    env = {**_COMPANIONS.get(spec.name, {}), spec.variable: raw}
    loaded = getattr(load_settings(env), spec.name)
    assert loaded != getattr(load_settings({}), spec.name)
    assert str(loaded).lower() == raw.lower() or float(loaded) == float(raw)


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.minimum is not None],
                         ids=lambda spec: spec.variable)
def test_every_declared_bound_is_enforced_at_load(spec):
    with pytest.raises(ConfigError, match=spec.name):
        load_settings({spec.variable: str(spec.minimum - 1)})
    if spec.maximum is not None:
        with pytest.raises(ConfigError, match=spec.name):
            load_settings({spec.variable: str(spec.maximum + 1)})


def test_every_setting_has_one_variable_and_durations_say_their_unit_in_the_name():
    assert len({s.env for s in SETTINGS}) == len(SETTINGS) == len(Settings.__dataclass_fields__)
    for spec in SETTINGS:
        assert spec.doc and spec.env == spec.env.upper()
        assert (spec.unit == "seconds") == spec.name.endswith("_seconds"), spec.name
        assert (spec.unit == "bytes") == spec.name.endswith("_bytes"), spec.name


def test_profile_timeouts_default_to_the_medium_profile():
    medium = PROFILES["medium"]
    for name in ("access_token_ttl_seconds", "idle_timeout_seconds",
                 "absolute_timeout_seconds", "step_up_window_seconds"):
        assert getattr(Settings(), name) == getattr(medium, name)
        assert getattr(load_settings({}), name) == getattr(medium, name)


def test_serving_flags_win_over_their_variables_and_are_validated_alike():
    env = {"LATCHKEY_HOST": "10.1.2.3", "LATCHKEY_PORT": "9000", "LATCHKEY_WORKERS": "3",
           "LATCHKEY_THREADS": "4", "LATCHKEY_ISSUER": "https://auth.example.com"}
    from_env = serving_settings(build_parser().parse_args([]), env)
    assert (from_env.host, from_env.port, from_env.workers, from_env.threads) == (
        "10.1.2.3", 9000, 3, 4)
    flagged = serving_settings(build_parser().parse_args(
        ["serve", "--host", "::1", "--port", "9001", "--workers", "5", "--threads", "6"]), env)
    assert (flagged.host, flagged.port, flagged.workers, flagged.threads) == (
        "::1", 9001, 5, 6)
    defaults = serving_settings(build_parser().parse_args([]), {})
    assert (defaults.host, defaults.port, defaults.workers, defaults.threads) == (
        "127.0.0.1", 8000, 2, 8)
    with pytest.raises(ConfigError, match="workers"):
        serving_settings(build_parser().parse_args(["--workers", "0"]), {})


def test_a_malformed_serving_variable_is_a_configuration_error_not_a_traceback(
        monkeypatch, capsys):
    monkeypatch.setenv("LATCHKEY_WORKERS", "many")
    assert main([]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_ids_are_random_and_long_enough():
    sids = {new_session_id() for _ in range(1000)}
    assert len(sids) == 1000
    assert all(len(base64.urlsafe_b64decode(s + "==")) * 8 >= 128 for s in list(sids)[:10])
    assert len(base64.urlsafe_b64decode(new_user_id() + "==")) * 8 >= 128


def test_refresh_token_carries_a_192_bit_secret_and_a_mac_and_round_trips(service):
    token = service.new_refresh_token(new_user_id(), new_session_id())
    parsed = RefreshToken.parse(token.value)
    assert (parsed.user_id, parsed.session_id, parsed.generation) == (
        token.user_id, token.session_id, 0)
    raw = base64.urlsafe_b64decode(token.value[4:] + "==")
    assert len(raw[-32:-8]) * 8 == 192
    assert service.is_authentic(parsed) and service.is_authentic(service.successor(parsed))
    assert token.value not in repr(token)


@pytest.mark.parametrize("bad", [
    None, 42, "", "lkr_", "lkr_" + "A" * 101, "lkr_" + "A" * 103, "lkr_" + "*" * 102,
    "xyz_" + "A" * 102, "lkr_" + "A" * 101 + "=", {"a": 1},
])
def test_malformed_refresh_tokens_are_rejected_before_any_lookup(bad):
    with pytest.raises(InvalidToken):
        RefreshToken.parse(bad)


def test_successor_is_deterministic_and_unlinkable_without_the_key(service, tmp_path):
    token = service.new_refresh_token(new_user_id(), new_session_id())
    first, second = service.successor(token), service.successor(token)
    assert first.value == second.value and first.generation == 1
    other_settings = load_settings({}, {"instance_path": tmp_path / "other"})
    other = TokenService(other_settings, KeyRing(other_settings), HmacKeys(other_settings))
    assert other.successor(token).value != first.value


def test_store_keeps_only_keyed_hash_of_refresh_token(service):
    token = service.new_refresh_token(new_user_id(), new_session_id())
    digest = service.refresh_hash(token)
    assert token.value not in digest and len(digest) < 30
    assert service.refresh_hash(service.successor(token)) != digest


def test_access_token_has_exactly_the_contract_claims_and_no_pii(service):
    uid, sid = new_user_id(), new_session_id()
    token = service.issue_access_token(uid, sid, "normal", int(time.time()))
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["kid"]
    assert set(claims) == {"iss", "aud", "sub", "sid", "client_id", "jti", "iat", "exp",
                           "auth_level", "auth_time"}
    assert claims["sub"] == uid and claims["sid"] == sid
    assert service.verify_access_token(token).session_id == sid


def _b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_algorithm_is_pinned_none_and_hmac_confusion_rejected(service):
    uid, sid = new_user_id(), new_session_id()
    good = service.issue_access_token(uid, sid, "normal", int(time.time()))
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    unsigned = _b64({"alg": "none", "kid": kid, "typ": "JWT"}) + "." + _b64(claims) + "."
    with pytest.raises(InvalidToken):
        service.verify_access_token(unsigned + "A" * 30)
    jwk = service._keyring.current.public_jwk()
    hs = jwt.encode(claims, jwk["x"].encode() * 2, algorithm="HS256", headers={"kid": kid})
    with pytest.raises(InvalidToken):
        service.verify_access_token(hs)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidToken):
        service.verify_access_token(tampered)


def test_expired_access_token_is_refused_even_when_cached(service):
    uid, sid = new_user_id(), new_session_id()
    token = service.issue_access_token(uid, sid, "normal", int(time.time()))
    service.verify_access_token(token)  # now cached
    claims = service.claims_ignoring_expiry(token)
    object.__setattr__(claims, "expires_at", int(time.time()) - 1)
    with pytest.raises(TokenExpired):
        service.verify_access_token(token)


def test_token_shapes_are_recognised_for_url_and_log_scrubbing(service):
    token = service.new_refresh_token(new_user_id(), new_session_id())
    access = service.issue_access_token(new_user_id(), new_session_id(), "normal", 0)
    assert looks_like_token(token.value) and looks_like_token(access)
    assert not looks_like_token("v1") and not looks_like_token("sessions")


def test_generated_hmac_secret_survives_any_random_bytes(tmp_path):
    # Regression: a raw secret was once read with strip(), losing whitespace bytes.
    for i in range(40):
        settings = load_settings({}, {"instance_path": tmp_path / str(i)})
        first = HmacKeys(settings).refresh_hash
        assert HmacKeys(settings).refresh_hash == first
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"\n" * 8 + b"\x00" * 32 + b" " * 4)
    supplied = load_settings({}, {"instance_path": tmp_path / "s", "hmac_secret_file": raw})
    assert HmacKeys(supplied).refresh_hash


@pytest.mark.parametrize(("env", "message"), [
    ({"LATCHKEY_REVOCATION_DURABILITY": "sometimes"}, "revocation_durability"),
    ({"LATCHKEY_REVOCATION_UNCONFIRMED": "ignore"}, "revocation_unconfirmed"),
    ({"LATCHKEY_REVOCATION_REPLICAS": "-1"}, "revocation_replicas"),
    ({"LATCHKEY_REVOCATION_WAIT_TIMEOUT": "2"}, "revocation_wait_timeout_seconds"),
])
def test_revocation_durability_settings_are_refused_when_they_cannot_work(env, message):
    # A wait as long as the socket timeout would be cut off as a lost Redis (503).
    with pytest.raises(ConfigError, match=message):
        load_settings(env)
