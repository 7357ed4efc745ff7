"""docs/RESOURCE_SERVERS.md's examples, run as a user runs them: the Flask snippet under a
real gunicorn, the FastAPI snippet under a real uvicorn, a plain WSGI app behind the WSGI
middleware under gunicorn, and the ``curl`` introspection example, each against a real
Latchkey server and Redis on loopback. A live session is served; the very next request
after a logout-all is refused with the reason; the printed ACL is the page's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from latchkey_resource.acl import acl_setuser_command
from latchkey_server.processes import stop_process

from tests.conftest import VENV_BIN, free_port
from tests.resource.conftest import Deployment, app_headers, bearer_to

PAGE = Path(__file__).resolve().parents[2] / "docs" / "RESOURCE_SERVERS.md"
_SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```(?:python|sh)\n(.*?)```", re.S)

PLAIN_WSGI_APP = '''
import json, os
from latchkey_resource import ResourceVerifier
from latchkey_resource.wsgi import LatchkeyWSGIMiddleware

def orders(environ, start_response):
    principal = environ["latchkey.principal"]
    body = json.dumps({"user_id": principal.user_id, "username": principal.username}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

application = LatchkeyWSGIMiddleware(
    orders, ResourceVerifier(os.environ["LATCHKEY_ISSUER"], os.environ["LATCHKEY_REDIS_URL"]))
'''


def snippets() -> dict[str, str]:
    return dict(_SNIPPET.findall(PAGE.read_text()))


@contextlib.contextmanager
def served(command: list[str], deployment: Deployment, port: int) -> Iterator[str]:
    """Run a backend server as a subprocess with the deployment's issuer and Redis URL."""
    env = {**os.environ, "LATCHKEY_ISSUER": deployment.issuer,
           "LATCHKEY_REDIS_URL": deployment.redis.url}
    log = deployment.server.instance_path / f"backend-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(base + "/orders", timeout=1)
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base
    finally:
        stop_process(proc, timeout_seconds=10)


def promise_holds(deployment: Deployment, base: str) -> None:
    """Served while live; refused with the reason on the very next request after logout."""
    tokens = deployment.sign_in()
    r = httpx.get(base + "/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json()["username"] == tokens["username"]
    assert bearer_to(deployment.server, "POST", "/v1/auth/logout-all",
                     tokens["access_token"]).status_code == 204
    r = httpx.get(base + "/orders", headers=app_headers(tokens["access_token"]))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (r.json()["code"], r.json()["reason"]) == ("session_revoked", "logout")
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = httpx.get(base + "/orders")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backends")
    found = snippets()
    (path / "flask_orders.py").write_text(found["flask-app"])
    (path / "fastapi_orders.py").write_text(found["fastapi-app"])
    (path / "wsgi_orders.py").write_text(PLAIN_WSGI_APP)
    return path


def test_the_flask_example_under_gunicorn_keeps_the_promise(deployment, app_dir):
    port = free_port()
    with served([str(VENV_BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}",
                 "--chdir", str(app_dir), "flask_orders:app"], deployment, port) as base:
        promise_holds(deployment, base)


def test_the_fastapi_example_under_uvicorn_keeps_the_promise(deployment, app_dir):
    port = free_port()
    with served([str(VENV_BIN / "uvicorn"), "--app-dir", str(app_dir), "--port", str(port),
                 "--host", "127.0.0.1", "fastapi_orders:app"], deployment, port) as base:
        promise_holds(deployment, base)


def test_a_plain_wsgi_app_behind_the_middleware_under_gunicorn_keeps_the_promise(
        deployment, app_dir):
    port = free_port()
    with served([str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                 "--chdir", str(app_dir), "wsgi_orders:application"], deployment, port) as base:
        promise_holds(deployment, base)


def test_the_curl_introspection_example_answers_active_then_inactive(deployment):
    created = subprocess.run(
        [str(VENV_BIN / "latchkey-server"), "clients", "create", "--name", "orders-shell",
         "--type", "resource"], env=deployment.server.env, capture_output=True, text=True,
        timeout=60, check=True)
    client = json.loads(created.stdout.strip().splitlines()[-1])
    tokens = deployment.sign_in()
    env = {**os.environ, "CLIENT_ID": client["client_id"],
           "CLIENT_SECRET": client["client_secret"], "ACCESS_TOKEN": tokens["access_token"],
           "LATCHKEY_ISSUER": deployment.issuer}

    def introspect() -> dict[str, object]:
        out = subprocess.run(["bash", "-c", snippets()["curl-introspect"]], env=env,
                             capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)

    answer = introspect()
    assert answer["active"] is True and answer["sid"] == tokens["session_id"]
    assert bearer_to(deployment.server, "POST", "/v1/auth/logout-all",
                     tokens["access_token"]).status_code == 204
    assert introspect() == {"active": False}


def test_the_pages_acl_is_the_one_the_package_prints():
    page = PAGE.read_text()
    block = page.split("<!-- acl-setuser -->\n```\n", 1)[1].split("```", 1)[0].strip()
    assert block == acl_setuser_command("lk-resource")
    printed = subprocess.run([str(VENV_BIN / "python"), "-m", "latchkey_resource.acl",
                              "lk-resource"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == block
