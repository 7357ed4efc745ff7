"""A resource server runs the session check as the token server does: ``FCALL`` of the
library the token server loaded, ``EVALSHA`` while there is none, and never ``FUNCTION
LOAD`` (its ACL does not allow it: ``latchkey_resource.acl``). A real redis-server, a
real Latchkey server beside it, a verifier logged in as the documented ACL user."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from latchkey_resource import ResourceVerifier, scripts
from latchkey_resource.acl import acl_setuser_command

from tests.resource.conftest import Deployment, app_headers, bearer_to

PASSWORD = "resource-runner-password-41ab"


@pytest.fixture(scope="module")
def acl_deployment(deployment_factory: Callable[..., Deployment]) -> Deployment:
    deployment = deployment_factory()
    deployment.redis.client().execute_command(
        *acl_setuser_command("lk-resource", PASSWORD).split())
    return deployment


def _verifier(deployment: Deployment) -> ResourceVerifier:
    url = f"redis://lk-resource:{PASSWORD}@127.0.0.1:{deployment.redis.port}/0"
    verifier = ResourceVerifier(deployment.issuer, url)
    deployment.verifiers.append(verifier)
    return verifier


def _verify(verifier: ResourceVerifier, access_token: str) -> None:
    headers = app_headers(access_token)
    principal = verifier.verify(headers["Authorization"], headers=headers)
    assert principal.session_id


def _calls(direct: redis.Redis) -> dict[str, int]:
    stats = direct.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("fcall", "evalsha", "eval", "function|load")}


def _refused_to_resource(direct: redis.Redis) -> list[object]:
    return [e for e in direct.acl_log() if e.get("username") == "lk-resource"
            and e.get("object") != "client|setinfo"]


def test_a_resource_server_fcalls_the_library_the_token_server_loaded(acl_deployment):
    direct = acl_deployment.redis.client()
    tokens = acl_deployment.sign_in()
    # The token server's own /v1/me loads the library on first use.
    assert bearer_to(acl_deployment.server, "GET", "/v1/me",
                     tokens["access_token"]).status_code == 200
    verifier = _verifier(acl_deployment)
    direct.config_resetstat()
    for _ in range(5):
        _verify(verifier, tokens["access_token"])
    assert _calls(direct) == {"fcall": 5, "evalsha": 0, "eval": 0, "function|load": 0}
    assert not _refused_to_resource(direct)


def test_without_the_library_it_serves_by_evalsha_and_fcalls_once_it_is_back(
        acl_deployment):
    direct = acl_deployment.redis.client()
    tokens = acl_deployment.sign_in()
    verifier = _verifier(acl_deployment)
    direct.function_flush()  # a flushed store, or a resource server started first
    direct.script_flush()
    direct.config_resetstat()
    for _ in range(3):
        _verify(verifier, tokens["access_token"])
    # One FCALL found no library; no load was tried (the ACL would refuse it): EVAL once
    # (the script cache was empty too), EVALSHA after, and no FCALL per request.
    assert _calls(direct) == {"fcall": 1, "evalsha": 3, "eval": 1, "function|load": 0}
    assert not _refused_to_resource(direct)
    # The token server loads the library again on its next check; the resource server
    # tries FCALL again once LOAD_RETRY_SECONDS have passed, and keeps to it.
    assert bearer_to(acl_deployment.server, "GET", "/v1/me",
                     tokens["access_token"]).status_code == 200
    assert verifier._script._retry_at >= time.monotonic() + scripts.LOAD_RETRY_SECONDS - 30
    verifier._script._retry_at = time.monotonic() - 1  # as if the interval had passed
    direct.config_resetstat()
    for _ in range(3):
        _verify(verifier, tokens["access_token"])
    assert _calls(direct)["fcall"] == 3 and _calls(direct)["evalsha"] == 0
    assert not _refused_to_resource(direct)


def test_a_resource_acl_without_fcall_is_served_by_evalsha(acl_deployment):
    direct = acl_deployment.redis.client()
    direct.execute_command("ACL", "SETUSER", "lk-narrow", "on", f">{PASSWORD}",
                           *acl_setuser_command("x").split()[5:], "-fcall")
    url = f"redis://lk-narrow:{PASSWORD}@127.0.0.1:{acl_deployment.redis.port}/0"
    verifier = ResourceVerifier(acl_deployment.issuer, url)
    acl_deployment.verifiers.append(verifier)
    tokens = acl_deployment.sign_in()
    _verify(verifier, tokens["access_token"])
    direct.config_resetstat()
    for _ in range(3):
        _verify(verifier, tokens["access_token"])
    # Refused once, then never asked again.
    assert _calls(direct)["fcall"] == 0 and _calls(direct)["evalsha"] == 3
