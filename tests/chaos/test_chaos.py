"""Chaos in CI: a lossy network, many refreshing SDK clients, a thief (L3, S3).

The short version of ``bench/chaos.py`` (same workload, ``tests/chaos/workload.py``): about
20 s of 12 clients x 3 threads plus 3 victims, through a proxy that drops 10 % and delays
10 % of responses, against a real gunicorn server (2 workers) and redis-server with a 2 s
access-token lifetime and a 10 s reuse grace window. It fails if one honest client is
logged out (an SDK that gave up on a lost refresh response, or a server that forked or
revoked a chain on a legitimate retry), or if one replay of a stolen refresh token after
the grace window is not caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import PASSWORD, Api, ServerProcess, free_port, unique_username
from tests.netproxy import LoopbackProxy

from .workload import ChaosConfig, run_chaos

GRACE_SECONDS = 10


@pytest.fixture
def chaos_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A gunicorn server with 2 workers, 2 s access tokens and a 10 s grace window."""
    return server_factory(access_token_ttl=2, refresh_reuse_grace=GRACE_SECONDS, workers=2,
                          log_level="INFO")


@pytest.fixture
def lossy_proxy(chaos_server: ServerProcess) -> Iterator[LoopbackProxy]:
    """The proxy in front of it, recording nothing (only counting), seeded."""
    proxy = LoopbackProxy(chaos_server.base_url, record=False, seed=8).start()
    yield proxy
    proxy.stop()


def _users(server: ServerProcess, n: int) -> list[str]:
    api = Api(server.base_url)
    try:
        return [api.register(unique_username("chaos")) for _ in range(n)]
    finally:
        api.close()


def test_lossy_network_logs_nobody_out_and_every_stolen_token_replay_is_caught(
    chaos_server: ServerProcess, lossy_proxy: LoopbackProxy
) -> None:
    # Bearer sessions (dpop=False): theft is caught by reuse detection, after the grace.
    config = ChaosConfig(clients=12, threads_per_client=3, victims=3, duration_seconds=20,
                         grace_seconds=GRACE_SECONDS, dpop=False)
    users = _users(chaos_server, config.clients + config.victims)
    report = run_chaos(chaos_server.base_url, lossy_proxy, users, PASSWORD, config)
    print(json.dumps(report.as_dict(), indent=1))  # shown with -s or on failure
    # The network really was lossy, refreshes really happened and really were lost.
    assert report.proxy_dropped >= 20 and report.proxy_delayed >= 20
    assert report.refreshes >= 100
    assert report.refresh_responses_dropped >= 3
    assert report.sdk_refresh_attempts > report.refreshes  # lost responses were replayed
    # Zero false logouts: every honest client signed in, its session live on the server.
    assert report.false_logouts == 0, report.false_logout_details
    assert report.honest_clients_signed_in_at_end == config.clients
    assert report.honest_sessions_live_at_end == config.clients
    assert report.api_calls_other_errors == 0, report.other_error_details
    # Theft after the grace window: caught every time, and the victim is told why.
    assert report.theft_replays == config.victims, report.theft_details
    assert report.reuse_detections == config.victims, report.theft_details
    assert report.victims_signed_out_reuse == config.victims, report.theft_details
    assert "refresh_token_reused" in chaos_server.logs()


@pytest.fixture
def dpop_chaos(server_factory: Callable[..., ServerProcess]
               ) -> Iterator[tuple[ServerProcess, LoopbackProxy]]:
    """The chaos server with DPoP on (``allowed``, the default) and stolen tokens revoked,
    behind its lossy proxy. The proxy's URL is the server's public one (``LATCHKEY_ISSUER``),
    as a load balancer's is: a proof's ``htu`` names the URL the client called."""
    port = free_port()
    server = server_factory(access_token_ttl=2, refresh_reuse_grace=GRACE_SECONDS, workers=2,
                            log_level="INFO", dpop_stolen_token="revoke",
                            issuer=f"http://127.0.0.1:{port}")
    proxy = LoopbackProxy(server.base_url, record=False, seed=8)
    proxy.port = port
    proxy.start()
    yield server, proxy
    proxy.stop()


def test_with_dpop_16_lossy_clients_stay_signed_in_and_every_keyless_replay_is_caught(
    dpop_chaos: tuple[ServerProcess, LoopbackProxy],
) -> None:
    """The issue's run: 16 clients (13 honest, 3 victims), DPoP on, a lossy network.

    Every refresh, retry and lost-response replay carries a fresh proof; a copied refresh
    token replayed at once (inside the grace window) without the key is refused.
    """
    dpop_chaos_server, dpop_lossy_proxy = dpop_chaos
    config = ChaosConfig(clients=13, threads_per_client=3, victims=3, duration_seconds=20,
                         grace_seconds=GRACE_SECONDS, dpop=True)
    users = _users(dpop_chaos_server, config.clients + config.victims)
    report = run_chaos(dpop_chaos_server.base_url, dpop_lossy_proxy, users, PASSWORD, config)
    print(json.dumps(report.as_dict(), indent=1))
    assert report.proxy_dropped >= 20 and report.proxy_delayed >= 20
    assert report.refreshes >= 100
    assert report.refresh_responses_dropped >= 3
    assert report.sdk_refresh_attempts > report.refreshes  # replays, each with a new proof
    assert report.false_logouts == 0, report.false_logout_details
    assert report.honest_clients_signed_in_at_end == config.clients
    assert report.honest_sessions_live_at_end == config.clients
    assert report.honest_sessions_bound == config.clients  # DPoP really was on
    assert report.api_calls_other_errors == 0, report.other_error_details
    assert report.theft_replays == config.victims, report.theft_details
    # A keyless replay of the current token is refused for its missing proof (the stolen-
    # token policy ends the session); if the victim rotated between the copy and the
    # replay, the copy is the previous token and reuse detection wins (both ends are the
    # same for the thief and the victim, and which one is timing, not policy).
    assert report.dpop_refusals + report.reuse_detections == config.victims, \
        report.theft_details
    assert report.victims_signed_out_stolen == report.dpop_refusals, report.theft_details
    assert report.victims_signed_out_reuse == report.reuse_detections, report.theft_details
    if report.dpop_refusals:
        assert "dpop_stolen_token" in dpop_chaos_server.logs()
