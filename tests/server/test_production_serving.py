"""Production serving under gunicorn and granian: a safe optional access log, proxy trust
only when configured, HSTS, bounded request lines and header fields (H2), and a graceful
shutdown that finishes requests in flight. Tests taking ``wsgi_server`` run under both.
"""

from __future__ import annotations

import base64
import datetime
import json
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gunicorn.config import Config
from latchkey_server.config import load_settings
from latchkey_server.serving import RedactingGunicornLogger, gunicorn_options
from latchkey_server.serving_granian import MAX_HEADER_FIELD, MAX_REQUEST_LINE, granian_options

from tests.conftest import PASSWORD, unique_username
from tests.server.ops_support import sign_in

SECRET_QUERY_VALUE = "q-secret-8c1f2e"


def test_gunicorn_access_log_never_records_query_values_authorization_or_bodies(
        server_factory) -> None:
    server = server_factory(gunicorn_access_log="1")
    username, tokens = sign_in(server)
    basic = base64.b64encode(b"basic-user-7d2a:basic-pass-7d2a").decode()
    with server.client() as http:
        http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        http.get("/healthz", params={"note": SECRET_QUERY_VALUE})
        http.get("/healthz", params={"refresh_token": tokens["refresh_token"]})
        http.get("/healthz", headers={"Authorization": f"Basic {basic}",
                                      "Referer": f"https://app.example/?r={SECRET_QUERY_VALUE}"})
        http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    server.stop()  # flush everything
    logs = server.logs()
    # gunicorn's own access lines are there...
    assert '"GET /healthz?note=' in logs
    assert 'POST /v1/auth/refresh HTTP/1.1\\" 401' in logs  # revoked: it leaked in a URL
    # ...and hold none of what they must not.
    for secret in (SECRET_QUERY_VALUE, tokens["access_token"], tokens["refresh_token"],
                   PASSWORD, "basic-user-7d2a", "basic-pass-7d2a", basic):
        assert secret not in logs, secret
    assert username not in logs


def test_gunicorn_access_log_is_off_by_default(server_factory) -> None:
    server = server_factory()
    httpx.get(server.base_url + "/healthz")
    server.stop()
    assert '"logger": "gunicorn.access"' not in server.logs()


def test_no_access_log_format_can_reach_headers_environ_or_query() -> None:
    """Even a format an operator edits cannot print Authorization or the query string."""
    cfg = Config()
    cfg.set("accesslog", "-")
    logger = RedactingGunicornLogger(cfg)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/v1/me?access_token=AAA",
               "PATH_INFO": "/v1/me", "QUERY_STRING": "access_token=AAA",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_AUTHORIZATION": "Bearer BBB", "HTTP_REFERER": "https://x/?t=CCC"}
    req = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer BBB")])
    resp = SimpleNamespace(status="200 OK", headers=[], sent=10)
    atoms = logger.atoms_wrapper_class(
        logger.atoms(resp, req, environ, datetime.timedelta(seconds=0.01)))
    hostile = ("%(r)s %(U)s %(q)s %(u)s %(f)s %({authorization}i)s "
               "%({http_authorization}e)s %({query_string}e)s %({raw_uri}e)s")
    line = hostile % atoms
    for secret in ("AAA", "BBB", "CCC"):
        assert secret not in line
    assert "/v1/me?access_token=" in line


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(server_factory,
                                                             wsgi_server: str) -> None:
    server = server_factory(server=wsgi_server)
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "evil.example"}
    with server.client(headers=forwarded) as http:
        _, tokens = sign_in(server, http)
        r = http.get("/v1/auth/sessions",
                     headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.json()["sessions"][0]["ip"] == "127.0.0.1"
    assert "Strict-Transport-Security" not in r.headers
    assert '"ip": "203.0.113.9"' not in server.logs()


def test_forwarded_headers_are_honoured_from_a_trusted_proxy(server_factory,
                                                           wsgi_server: str) -> None:
    server = server_factory(server=wsgi_server, trusted_proxies="1")
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with server.client(headers=forwarded) as http:
        _, tokens = sign_in(server, http)
        r = http.get("/v1/auth/sessions",
                     headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.json()["sessions"][0]["ip"] == "203.0.113.9"
    # The proxy terminated TLS, so the request was secure: HSTS goes out by itself.
    assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert '"ip": "203.0.113.9"' in server.logs()


def test_hsts_is_sent_when_configured(server_factory) -> None:
    server = server_factory(hsts="1", hsts_max_age="600")
    r = httpx.get(server.base_url + "/healthz")
    assert r.headers["Strict-Transport-Security"] == "max-age=600; includeSubDomains"


def test_sigterm_lets_requests_in_flight_finish(server_factory, wsgi_server: str) -> None:
    # Expensive password hashing makes a registration last about a second.
    server = server_factory(server=wsgi_server, argon2_time_cost="8", argon2_memory_kib="131072",
                            argon2_parallelism="1")
    result: dict[str, int] = {}

    def register() -> None:
        r = httpx.post(server.base_url + "/v1/auth/register", timeout=30, json={
            "username": unique_username(), "password": PASSWORD})
        result["status"] = r.status_code

    thread = threading.Thread(target=register)
    thread.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert result.get("status") == 201
    assert server.proc.wait(timeout=30) == 0


def test_gunicorn_settings_come_from_configuration(tmp_path: Path) -> None:
    settings = load_settings({}, {"instance_path": tmp_path, "worker_timeout_seconds": 45,
                                  "graceful_timeout_seconds": 25, "keepalive_seconds": 2,
                                  "gunicorn_access_log": True})
    options = gunicorn_options("::", 8000, 4, 8, settings)
    assert options["bind"] == "[::]:8000"
    assert (options["workers"], options["threads"], options["worker_class"]) == (4, 8, "gthread")
    assert (options["timeout"], options["graceful_timeout"], options["keepalive"]) == (45, 25, 2)
    assert options["accesslog"] == "-"
    assert options["forwarded_allow_ips"] == ""  # no proxy trusted unless configured
    assert callable(options["child_exit"])


def _raw_request(base_url: str, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` on a raw socket; return the answer's status and everything read."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize("oversize", ["request-line", "header-field"])
def test_an_oversize_request_line_or_header_field_is_refused_before_the_app(
        server_factory, wsgi_server: str, oversize: str) -> None:
    """H2: the longest line and header field are gunicorn's limits, under either server."""
    server = server_factory(server=wsgi_server)
    # Near the limits fits (gunicorn counts a little framing its own way), past them not.
    line_room = MAX_REQUEST_LINE - len("GET /healthz?pad= HTTP/1.1") - 100
    field_room = MAX_HEADER_FIELD - len("X-Pad: ") - 100
    fits = (f"GET /healthz?pad={'a' * line_room} HTTP/1.1\r\nHost: x\r\n"
            f"X-Pad: {'b' * field_room}\r\nConnection: close\r\n\r\n").encode()
    assert _raw_request(server.base_url, fits)[0] == 200
    too_long = (f"GET /healthz?pad={'a' * (line_room + 150)} HTTP/1.1\r\nHost: x\r\n"
                f"Connection: close\r\n\r\n" if oversize == "request-line" else
                f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {'b' * (field_room + 150)}"
                f"\r\nConnection: close\r\n\r\n").encode()
    status, answer = _raw_request(server.base_url, too_long)
    if wsgi_server == "gunicorn":  # its own plain-text 414 or 431
        assert status in (400, 414, 431)
    else:
        assert status == 400
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "invalid_request"
    assert "Traceback" not in server.logs()


def test_granian_settings_come_from_configuration(tmp_path: Path) -> None:
    settings = load_settings({}, {"instance_path": tmp_path, "graceful_timeout_seconds": 25,
                                  "keepalive_seconds": 0})
    options = granian_options("::", 8000, 4, 8, settings)
    assert (options["address"], options["port"]) == ("::", 8000)
    assert (options["workers"], options["blocking_threads"]) == (4, 8)
    assert options["workers_kill_timeout"] == 25
    assert options["http1_settings"].keep_alive is False
    assert options["respawn_failed_workers"] is True
    assert options["log_access"] is False  # the app writes its own redacted access log
    assert options["target"] == "latchkey_server.serving_granian:create_bounded_app"
