"""The store runs its scripts as FUNCTION libraries where it can, and as EVALSHA where not.

A library runs the shared prelude once, at load, instead of on every call
(docs/PERFORMANCE.md); these tests prove, against real redis-servers, that the switch
never costs a request: a store that lost its libraries, one whose ACL refuses them, one
without FCALL at all, and two versions of a script side by side all keep serving, with
the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from latchkey_resource import scripts
from latchkey_server import create_app
from latchkey_server.extension import EXTENSION_KEY
from latchkey_server.store import SessionStore

from tests.conftest import PASSWORD, RedisProcess, unique_username

FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
USER_AGENT = {"User-Agent": "LatchkeyTest/1.0"}


def _app(url: str, instance_path: Path) -> Any:
    return create_app({"redis_url": url, "instance_path": instance_path, **FAST_ARGON2})


def _sign_in(client: Any) -> dict[str, Any]:
    body = {"username": unique_username(), "password": PASSWORD}
    assert client.post("/v1/auth/register", json=body).status_code == 201
    response = client.post("/v1/auth/login", json=body, headers=USER_AGENT)
    assert response.status_code == 200
    tokens: dict[str, Any] = response.get_json()
    return tokens


def _me(client: Any, tokens: dict[str, Any]) -> Any:
    return client.get("/v1/me", headers={
        **USER_AGENT, "Authorization": f"Bearer {tokens['access_token']}"})


def _refresh(client: Any, tokens: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                           headers=USER_AGENT)
    assert response.status_code == 200, response.get_json()
    fresh: dict[str, Any] = response.get_json()
    return fresh


def _calls(direct: redis.Redis, command: str) -> int:
    calls: int = direct.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)
    return calls


def _store(app: Any) -> SessionStore:
    store: SessionStore = app.extensions[EXTENSION_KEY].store
    return store


def _libraries(direct: redis.Redis) -> list[str]:
    # RESP2: each library is a flat list of names and values.
    return sorted(str(dict(zip(lib[::2], lib[1::2], strict=True))["library_name"])
                  for lib in direct.function_list())


@pytest.fixture
def fresh_redis(module_redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    return module_redis_factory()


def test_protected_requests_and_refreshes_are_fcalls_once_the_library_is_loaded(
        fresh_redis, tmp_path):
    app = _app(fresh_redis.url, tmp_path / "i")
    client, direct = app.test_client(), fresh_redis.client()
    tokens = _sign_in(client)
    assert _me(client, tokens).status_code == 200
    tokens = _refresh(client, tokens)
    store = _store(app)
    # Named after the script and its text's hash; loaded on first use, not before.
    assert {store._verify_touch.function, store._rotate_refresh.function} <= set(
        _libraries(direct))
    direct.config_resetstat()
    for _ in range(10):
        assert _me(client, tokens).status_code == 200
    tokens = _refresh(client, tokens)
    assert _calls(direct, "fcall") == 11
    assert _calls(direct, "evalsha") == 0 and _calls(direct, "eval") == 0


def test_a_store_that_lost_its_libraries_and_scripts_still_serves_and_loads_them_again(
        fresh_redis, tmp_path):
    # A fresh replica promoted before it received the libraries, or a flushed store.
    app = _app(fresh_redis.url, tmp_path / "i")
    client, direct = app.test_client(), fresh_redis.client()
    tokens = _sign_in(client)
    assert _me(client, tokens).status_code == 200
    direct.function_flush()
    direct.script_flush()
    assert _me(client, tokens).status_code == 200
    tokens = _refresh(client, tokens)
    store = _store(app)
    assert store._verify_touch.function in _libraries(direct)
    direct.config_resetstat()
    assert _me(client, tokens).status_code == 200
    assert _calls(direct, "fcall") == 1


def test_a_user_whose_acl_refuses_functions_is_served_by_evalsha(fresh_redis, tmp_path):
    # A narrow ACL written for EVALSHA only (as a resource server's may be).
    direct = fresh_redis.client()
    direct.execute_command("ACL", "SETUSER", "narrow", "on", ">narrow-secret", "~*", "&*",
                           "+@all", "-fcall", "-function")
    url = f"redis://narrow:narrow-secret@127.0.0.1:{fresh_redis.port}/0"
    app = _app(url, tmp_path / "i")
    client = app.test_client()
    tokens = _sign_in(client)
    assert _me(client, tokens).status_code == 200
    direct.config_resetstat()
    assert _me(client, tokens).status_code == 200
    tokens = _refresh(client, tokens)
    assert _me(client, tokens).status_code == 200
    assert _calls(direct, "fcall") == 0  # given up after the first refusal, not per call
    assert _calls(direct, "evalsha") == 3
    assert _libraries(direct) == []


def test_a_store_without_fcall_is_served_by_evalsha(module_redis_factory, tmp_path):
    # Redis before 7.0 has no FCALL; an unknown command is answered before anything runs.
    no_functions = module_redis_factory("--rename-command", "FCALL", "")
    app = _app(no_functions.url, tmp_path / "i")
    client, direct = app.test_client(), no_functions.client()
    tokens = _sign_in(client)
    assert _me(client, tokens).status_code == 200
    direct.config_resetstat()
    assert _me(client, tokens).status_code == 200
    assert _refresh(client, tokens)
    assert _calls(direct, "evalsha") == 2


def test_two_versions_of_a_script_load_side_by_side_and_the_same_one_once(
        fresh_redis, tmp_path):
    body = scripts.lua_source(scripts.VERIFY_TOUCH)
    ours, library = scripts.function_library(scripts.VERIFY_TOUCH, body)
    other, other_library = scripts.function_library(
        scripts.VERIFY_TOUCH, body + "\n-- another deployment's version\n")
    assert ours != other
    direct = fresh_redis.client()
    direct.function_load(other_library)
    # Two token servers (or a token server and a resource server) of this version share
    # one Redis (and one key directory): the library is loaded once, neither replaces the
    # other's.
    first, second = (_app(fresh_redis.url, tmp_path / "shared").test_client()
                     for _ in range(2))
    for client in (first, second, first):
        tokens = _sign_in(client)
        assert _me(client, tokens).status_code == 200
        assert _me(second, tokens).status_code == 200
    libraries = _libraries(direct)
    assert other in libraries and libraries.count(ours) == 1
    assert direct.function_load(library, replace=True) == ours  # the same text, unchanged
