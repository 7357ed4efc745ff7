"""Run the server on a real 3-master Redis Cluster: routing, scripts, sinks, outages.

The end-to-end session modules also run whole against a cluster (``make test`` sets
``LATCHKEY_TEST_BACKEND=cluster``); this module proves what only a cluster can show, on a
cluster of its own in every run: a user's keys share one slot while users spread over
every master, the rate limiter and the security stream live on the cluster too, a node
that lost its script cache still serves, and a lost master fails closed for its own
users only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from latchkey_server import create_app
from latchkey_server.config import ConfigError, cluster_seed_nodes, load_settings
from latchkey_server.extension import services
from latchkey_server.store import (
    SECURITY_NOISE_STREAM_KEY,
    SESSION_FIELD_PREFIX,
    dpop_jti_key,
    session_field,
    user_key,
)
from latchkey_server.throttle import EXTENSION_KEY as THROTTLE_KEY
from latchkey_server.throttle import _storage_uri
from limits.storage import RedisClusterStorage
from redis.cluster import RedisCluster

from tests.conftest import (
    PASSWORD,
    Api,
    RedisClusterProcess,
    start_redis_cluster,
    unique_username,
)

FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}


def cluster_app(cluster: RedisClusterProcess, instance_path: Path) -> Any:
    """Build the app in-process against ``cluster``, as the environment would configure it."""
    return create_app({
        **cluster.settings,
        "redis_cluster_nodes": cluster.url.server_env["LATCHKEY_REDIS_CLUSTER_NODES"],
        "instance_path": instance_path, **FAST_ARGON2,
    })


def sign_in(client: Any, username: str | None = None) -> dict[str, Any]:
    """Register a fresh user through the API and return their login response."""
    username = username or unique_username()
    body = {"username": username, "password": PASSWORD}
    assert client.post("/v1/auth/register", json=body).status_code == 201
    r = client.post("/v1/auth/login", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def user_id(tokens: dict[str, Any]) -> str:
    return jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]


def me(client: Any, tokens: dict[str, Any]) -> Any:
    return client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    started = start_redis_cluster(tmp_path_factory.mktemp("own-cluster"))
    yield started
    started.stop()


# -- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ({"redis_cluster": True}, "redis_url"),
    ({"redis_cluster": True, "redis_url": "unix:///tmp/redis.sock"}, "redis_url"),
    ({"redis_cluster": True, "redis_url": "redis://10.0.0.1:7000/1"}, "database 0"),
    ({"redis_cluster": True, "redis_url": "redis://10.0.0.1:7000",
      "redis_cluster_nodes": "10.0.0.2"}, "host:port"),
    ({"redis_url": "redis://10.0.0.1:7000", "redis_cluster_nodes": "10.0.0.2:7000"},
     "needs redis_cluster"),
])
def test_cluster_settings_are_refused_when_they_cannot_name_a_cluster(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({}, overrides)


def test_cluster_seeds_are_the_url_node_then_the_extra_nodes(tmp_path):
    settings = load_settings({
        "LATCHKEY_REDIS_CLUSTER": "true",
        "LATCHKEY_REDIS_URL": "rediss://app:s%40cret@10.0.0.1:7000/0",
        "LATCHKEY_REDIS_CLUSTER_NODES": "10.0.0.2:7001, [fd00::3]:7002",
        "LATCHKEY_INSTANCE_PATH": str(tmp_path),
    })
    assert cluster_seed_nodes(settings) == [("10.0.0.1", 7000), ("10.0.0.2", 7001),
                                            ("fd00::3", 7002)]
    # The rate limiter's cluster URI lists every seed; credentials and TLS go as options.
    assert _storage_uri(settings.redis_url or "", settings) == (
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[fd00::3]:7002")


# -- one slot per user, every master in use -----------------------------------------------
def test_users_spread_over_every_master_and_each_user_is_one_key_in_one_slot(cluster, tmp_path):
    app = cluster_app(cluster, tmp_path / "instance")
    with app.app_context():
        assert isinstance(services().store.client, RedisCluster)
    assert isinstance(app.extensions[THROTTLE_KEY].limiter._storage, RedisClusterStorage)
    client, direct = app.test_client(), cluster.client()
    masters: set[int] = set()
    for _ in range(40):
        tokens = sign_in(client)
        uid = user_id(tokens)
        # One key holds the user and every session: every script stays in one slot.
        assert [k for k in direct.scan_iter(f"lk:{{u:{uid}}}:*")] == [user_key(uid)]
        assert direct.hexists(user_key(uid), session_field(tokens["session_id"]))
        masters.add(direct.get_node_from_key(user_key(uid)).port)
        assert me(client, tokens).status_code == 200
        if len(masters) == len(cluster.nodes):
            break
    assert masters == {node.port for node in cluster.nodes}


def test_dpop_proofs_work_on_the_cluster_with_their_jtis_in_the_users_slot(cluster, tmp_path):
    from tests.server.dpop_support import DPoPKey

    app = cluster_app(cluster, tmp_path / "instance")
    with app.app_context():
        issuer = services().settings.issuer
    client, direct, key = app.test_client(), cluster.client(), DPoPKey()
    username = unique_username()
    assert client.post("/v1/auth/register",
                       json={"username": username, "password": PASSWORD}).status_code == 201
    r = client.post("/v1/auth/login", json={"username": username, "password": PASSWORD},
                    headers={"DPoP": key.proof("POST", issuer + "/v1/auth/login")})
    assert r.status_code == 200 and r.json["token_type"] == "DPoP", r.text
    r = client.post("/v1/auth/refresh", json={"refresh_token": r.json["refresh_token"]},
                    headers={"DPoP": key.proof("POST", issuer + "/v1/auth/refresh")})
    assert r.status_code == 200, r.text
    access = r.json["access_token"]
    proof = key.proof("GET", issuer + "/v1/me", access_token=access)
    headers = {"Authorization": f"DPoP {access}", "DPoP": proof}
    assert client.get("/v1/me", headers=headers).status_code == 200
    assert client.get("/v1/me", headers=headers).status_code == 401  # the jti was used
    uid = user_id(r.json)
    jtis = dpop_jti_key(uid)
    assert direct.zcard(jtis) == 3  # login, refresh, the request
    assert direct.keyslot(jtis) == direct.keyslot(user_key(uid))


def test_the_limiter_and_the_security_stream_work_on_the_cluster(cluster, tmp_path):
    app = cluster_app(cluster, tmp_path / "instance")
    client, direct = app.test_client(), cluster.client()
    username = unique_username()
    sign_in(client, username)
    wrong = {"username": username, "password": "not the password at all"}
    codes = [client.post("/v1/auth/login", json=wrong).status_code for _ in range(11)]
    assert codes == [401] * 10 + [429]
    # Anyone can raise brute_force: it goes to the noise stream, not the alerts.
    events = direct.xrevrange(SECURITY_NOISE_STREAM_KEY, count=1)
    assert events and events[0][1]["event"] == "brute_force"


def test_a_node_that_lost_its_script_cache_still_serves(cluster, tmp_path):
    # A restarted master, or a replica just promoted, starts with no scripts.
    app = cluster_app(cluster, tmp_path / "instance")
    client = app.test_client()
    tokens = sign_in(client)
    for node in cluster.nodes:
        redis.Redis(port=node.port).script_flush()
    assert me(client, tokens).status_code == 200
    r = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200


def test_the_sweep_visits_the_users_on_every_master(cluster, tmp_path):
    app = create_app({
        **cluster.settings,
        "redis_cluster_nodes": cluster.url.server_env["LATCHKEY_REDIS_CLUSTER_NODES"],
        "instance_path": tmp_path / "instance", "ended_session_retention_seconds": 1,
        **FAST_ARGON2,
    })
    client, direct = app.test_client(), cluster.client()
    ours, masters = [], set()
    while len(masters) < len(cluster.nodes) or len(ours) < 6:
        tokens = sign_in(client)
        assert client.post("/v1/auth/logout",
                           json={"refresh_token": tokens["refresh_token"]}).status_code == 204
        ours.append(user_id(tokens))
        masters.add(direct.get_node_from_key(user_key(ours[-1])).port)
    time.sleep(1.2)
    with app.app_context():
        users, dropped, _, _ = services().store.sweep_sessions(batch=2)
    assert users >= len(ours) and dropped >= len(ours)
    for uid in ours:
        assert not [f for f in direct.hkeys(user_key(uid)) if f.startswith(SESSION_FIELD_PREFIX)]


# -- a lost master ---------------------------------------------------------------------------
def test_a_lost_master_fails_closed_for_its_users_and_only_for_them(tmp_path):
    own = start_redis_cluster(tmp_path / "cluster")
    try:
        app = cluster_app(own, tmp_path / "instance")
        client, direct = app.test_client(), own.client()
        by_master: dict[int, dict[str, Any]] = {}
        for _ in range(60):
            tokens = sign_in(client)
            by_master.setdefault(direct.get_node_from_key(user_key(user_id(tokens))).port,
                                 tokens)
            if len(by_master) == len(own.nodes):
                break
        lost = own.nodes[1]
        lost.stop()
        for node in own.nodes:
            if node is not lost:  # a script cache miss must not need the lost master
                redis.Redis(port=node.port).script_flush()
        for port, tokens in by_master.items():
            started = time.monotonic()
            r = me(client, tokens)
            if port == lost.port:
                # Fail closed, fast: never a 500, never a session taken for valid unchecked.
                assert r.status_code == 503 and r.get_json()["code"] == "store_unavailable"
                assert time.monotonic() - started < 2
            else:
                assert r.status_code == 200
        # Readiness asks one node: a worker that can reach the cluster stays in rotation,
        # so one lost shard costs its own users, not everyone (see docs/SCALING.md).
        assert client.get("/readyz").status_code == 200
    finally:
        own.stop()


def test_a_whole_cluster_down_answers_503_not_500(server_factory, tmp_path):
    """Every node unreachable: redis-py's cluster client raises RedisClusterException (not a
    RedisError); the server still fails closed with 503 store_unavailable (H1, never a 500)."""
    cluster = start_redis_cluster(tmp_path / "down")
    try:
        server = server_factory(store_url=cluster.url)
        api = Api(server.base_url)
        _, tokens = api.new_user_session()
        assert api.me(tokens["access_token"]).status_code == 200
    finally:
        cluster.stop()
    for response in (httpx.get(server.base_url + "/readyz", timeout=30),
                     api.me(tokens["access_token"]),
                     api.refresh(tokens["refresh_token"])):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "store_unavailable"
