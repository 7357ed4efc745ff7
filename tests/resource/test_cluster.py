"""On a Redis Cluster, as the token server supports it: the verifier is given any one node
(``redis_cluster=True``), discovers the rest, and runs the check on the node that owns the
user's slot; the policy key is read from its own slot. A real 3-master cluster on loopback
and a real Latchkey server on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jwt
import pytest
import redis
from latchkey_resource import ResourceVerifier, SessionRevoked
from latchkey_resource.store_keys import user_key

from tests.conftest import Api, RedisClusterProcess, ServerProcess, start_redis_cluster
from tests.resource.conftest import APP_UA, DEVICE, app_headers, bearer, bearer_to


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    started = start_redis_cluster(tmp_path_factory.mktemp("resource-cluster"))
    yield started
    started.stop()


def test_a_verifier_on_a_cluster_serves_live_sessions_and_refuses_ended_ones(
        cluster: RedisClusterProcess,
        module_server_factory: Callable[..., ServerProcess]) -> None:
    server = module_server_factory(store_url=cluster.url)
    verifier = ResourceVerifier(server.base_url, cluster.url, redis_cluster=True)
    api = Api(server.base_url)
    api.http.headers["User-Agent"] = APP_UA
    admin = cluster.client()
    try:
        # Users until their records sit on at least two nodes.
        sessions, nodes = [], set()
        while len(nodes) < 2 and len(sessions) < 30:
            tokens = api.new_user_session(device_id=DEVICE)[1]
            user_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
            nodes.add(admin.get_node_from_key(user_key(user_id)).port)
            sessions.append(tokens)
        assert len(nodes) >= 2
        for tokens in sessions:
            principal = verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
            assert principal.session_id == tokens["session_id"]
        for tokens in sessions:
            assert bearer_to(server, "POST", "/v1/auth/logout-all",
                             tokens["access_token"]).status_code == 204
            with pytest.raises(SessionRevoked):
                verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
    finally:
        api.close()
        verifier.close()
        admin.close()


def test_a_verifier_on_a_cluster_fcalls_the_users_node_in_one_round_trip(
        cluster: RedisClusterProcess,
        module_server_factory: Callable[..., ServerProcess]) -> None:
    # The verifier's cluster client routes FCALL by its key, as the token server's does
    # (one client class for both: latchkey_resource.redis_client.ClusterClient), instead of
    # asking a node first (COMMAND GETKEYS) on every request.
    server = module_server_factory(store_url=cluster.url)
    verifier = ResourceVerifier(server.base_url, cluster.url, redis_cluster=True)
    api = Api(server.base_url)
    api.http.headers["User-Agent"] = APP_UA
    nodes = [redis.Redis(port=node.port, decode_responses=True) for node in cluster.nodes]
    try:
        tokens = api.new_user_session(device_id=DEVICE)[1]
        # The token server's own check loads the library on the user's node.
        assert bearer_to(server, "GET", "/v1/me", tokens["access_token"]).status_code == 200
        verifier.verify(bearer(tokens["access_token"]), headers=app_headers())  # warm
        for node in nodes:
            node.config_resetstat()
        for _ in range(5):
            verifier.verify(bearer(tokens["access_token"]), headers=app_headers())
        stats = [node.info("commandstats") for node in nodes]
        assert sum(s.get("cmdstat_fcall", {}).get("calls", 0) for s in stats) == 5
        assert not any("cmdstat_command|getkeys" in s or "cmdstat_evalsha" in s
                       for s in stats), stats
    finally:
        api.close()
        verifier.close()
        for node in nodes:
            node.close()
