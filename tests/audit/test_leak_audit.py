"""Whole-system leak audit (D1, S1, T4): one run, every secret collected, searched everywhere.

One end-to-end run with every logger at DEBUG: ``latchkey-server`` under gunicorn (2
workers, gunicorn's own access log switched on, the embedded Redis with its append-only
file), SDK clients in this process (one storing its refresh token in the AES-GCM file),
the Kivy demo app headless (when kivy and ``tests/demo`` are available), and a raw HTTP
client doing what SDKs never do (a token in a URL, a stolen token replayed after the grace
window, wrong passwords). A proxy in front records every byte that crossed the wire, so the
audit knows every token, password and session id the run produced without trusting any
component to report them, and it drops one refresh response so the SDK's replay path runs.

Then it searches for each secret in:

- the server's stdout/stderr (app JSON logs, gunicorn's access and error logs);
- everything this process logged (SDK, httpx, httpcore), both through the SDK's redaction
  filter (nothing at all) and *unfiltered*: the SDK's own records hold nothing even without
  the filter, and no library's record holds a token or password (httpx does print request
  URLs, hence a DELETE's session id: the filter masks it);
- the demo app's DEBUG log and console;
- every file of the instance directory except the signing material (``keys/``) and the
  store's own data (``redis/``), which is checked like a Redis dump instead;
- the store: an RDB taken with ``redis-cli --rdb``, the RDB written by ``BGSAVE``, the
  append-only file, and ``SCAN`` + ``DUMP`` + a typed read of every key (compression off, so
  a string cannot hide inside LZF). Tokens and passwords must not be there. Raw session ids
  are the store's own keys by design (a session id grants nothing: access needs a signed
  access token, refresh needs the 256-bit secret Redis holds only a keyed hash of), so in
  the store's data they are allowed; everywhere else they count as a leak.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from latchkey_client import (
    EncryptedFileStorage,
    InvalidCredentialsError,
    LatchkeyClient,
    SessionRevokedError,
    install_redaction,
)

from tests.conftest import PASSWORD, Api, ServerProcess, free_port, unique_username
from tests.netproxy import LoopbackProxy

try:  # the demo's fixtures, when the demo and kivy are installed
    from tests.demo.conftest import DemoRun, display_env, run_demo  # noqa: F401
    HAVE_DEMO = True
except (ImportError, pytest.skip.Exception):
    HAVE_DEMO = False

pytestmark = pytest.mark.timeout(240)

NEW_PASSWORD = "an entirely new audit passphrase"
WRONG_PASSWORD = "not the password at all, audit"
GRACE_SECONDS = 2


def _secrets_on_the_wire(proxy: LoopbackProxy) -> dict[str, set[str]]:
    """Every token, session id and password in the requests and responses the proxy saw."""
    found: dict[str, set[str]] = {"token": set(), "session_id": set(), "password": set()}

    def walk(doc: Any) -> None:
        if isinstance(doc, dict):
            for key, value in doc.items():
                if isinstance(value, str) and key in ("access_token", "refresh_token"):
                    found["token"].add(value)
                elif isinstance(value, str) and key == "session_id":
                    found["session_id"].add(value)
                elif isinstance(value, str) and "password" in key:
                    found["password"].add(value)
                else:
                    walk(value)
        elif isinstance(doc, list):
            for item in doc:
                walk(item)

    for seen in proxy.seen:
        auth = seen.headers.get("authorization", "")
        if auth.startswith(("Bearer ", "DPoP ")):
            found["token"].add(auth.split(" ", 1)[1])
        if "/sessions/" in seen.path:
            found["session_id"].add(seen.path.rsplit("/", 1)[1].split("?")[0])
        for raw in (seen.body, seen.response_body):
            try:
                walk(json.loads(raw or b"null"))
            except ValueError:
                continue
    return found


def _store_dump(sock: str, dump_dir: Path) -> bytes:
    """Everything the store holds, as bytes: two RDB files, the AOF, DUMP and typed reads."""
    r = redis.Redis(unix_socket_path=sock)
    r.config_set("rdbcompression", "no")  # no LZF: every string appears verbatim
    cli_rdb = dump_dir / "cli.rdb"
    subprocess.run(["redis-cli", "-s", sock, "--rdb", str(cli_rdb)], check=True,
                   capture_output=True, timeout=30)
    before = r.lastsave()
    # After the save that served `--rdb`: SCHEDULE defers only behind an AOF rewrite, so a
    # fork still finishing that save answers "already in progress"; ask again until taken.
    for _ in range(200):
        try:
            r.bgsave(schedule=True)
            break
        except redis.exceptions.ResponseError as exc:
            if "in progress" not in str(exc):
                raise
        time.sleep(0.05)
    else:
        raise AssertionError("the store never took a BGSAVE")
    for _ in range(200):
        if r.lastsave() != before:
            break
        time.sleep(0.05)
    rdb_dir, rdb_name = r.config_get("dir")["dir"], r.config_get("dbfilename")["dbfilename"]
    parts = [cli_rdb.read_bytes(), (Path(rdb_dir) / rdb_name).read_bytes()]
    aof = [p for p in Path(rdb_dir).rglob("*") if p.is_file() and ".aof" in p.name]
    assert aof, "the embedded store keeps an append-only file"
    parts += [p.read_bytes() for p in aof]
    for key in r.scan_iter(count=1000):
        parts += [key, r.dump(key) or b""]
        kind = r.type(key).decode()
        if kind == "string":
            parts.append(r.get(key) or b"")
        elif kind == "hash":
            parts += [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == "set":
            parts += list(r.smembers(key))
        elif kind == "zset":
            parts += r.zrange(key, 0, -1)
        elif kind == "list":
            parts += r.lrange(key, 0, -1)
        elif kind == "stream":
            parts += [b for _, fields in r.xrange(key) for kv in fields.items() for b in kv]
    r.close()
    return b"\n".join(parts)


@pytest.fixture
def proxy_port() -> int:
    """The recording proxy's port: the server's public URL (``LATCHKEY_ISSUER``), so the
    SDK's DPoP proofs, which name the URL the client called (``htu``), are accepted."""
    return free_port()


@pytest.fixture
def audited_server(server_factory: Callable[..., ServerProcess], tmp_path: Path,
                   proxy_port: int) -> ServerProcess:
    """gunicorn, 2 workers, its access log on, DEBUG, the embedded store (AOF)."""
    return server_factory(
        embedded=True, instance_path=tmp_path / "i", workers=2, log_level="DEBUG",
        gunicorn_access_log="1", access_token_ttl=2, refresh_reuse_grace=GRACE_SECONDS,
        binding_policy="report", issuer=f"http://127.0.0.1:{proxy_port}",
    )


@pytest.fixture
def recording_proxy(audited_server: ServerProcess, proxy_port: int
                    ) -> Iterator[LoopbackProxy]:
    """A proxy that keeps every request and response (the audit's source of truth)."""
    proxy = LoopbackProxy(audited_server.base_url)
    proxy.port = proxy_port
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def captured_logs() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Root at DEBUG; one handler through the SDK's redaction filter, one without it."""
    root = logging.getLogger()
    filtered, unfiltered = io.StringIO(), io.StringIO()
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    with_filter, without = logging.StreamHandler(filtered), logging.StreamHandler(unfiltered)
    for handler in (with_filter, without):
        handler.setFormatter(fmt)
        handler.setLevel(logging.DEBUG)
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    redaction = install_redaction(root)  # filters every root handler...
    without.filters.clear()  # ...except this one: the unfiltered view
    try:
        yield filtered, unfiltered
    finally:
        root.removeHandler(with_filter)
        root.removeHandler(without)
        root.setLevel(old_level)
        for other in root.handlers:  # pytest's capture handler outlives this test
            other.removeFilter(redaction)


def _sdk_run(proxy: LoopbackProxy, server: ServerProcess, secure_dir: Path) -> None:
    """Drive the SDK and a raw client through every flow that handles a secret."""
    api = Api(server.base_url)
    username = api.register(unique_username("audit"))
    storage = EncryptedFileStorage(secure_dir / "tokens.bin", passphrase="audit passphrase")
    phone = LatchkeyClient(base_url=proxy.base_url, storage=storage, stay_signed_in=True,
                           idle_logout=False, device_id="audit-phone-1", device_name="Phone")
    # The phone's session is DPoP-bound (the SDK's default); the tablet's is a bearer one,
    # so the reuse detection of a copied bearer token is audited too.
    tablet = LatchkeyClient(base_url=proxy.base_url, idle_logout=False, dpop=False,
                            device_id="audit-tablet-1", device_name="Tablet")
    raw = httpx.Client(base_url=proxy.base_url, timeout=10)
    try:
        with pytest.raises(InvalidCredentialsError):
            phone.login(username=username, password=WRONG_PASSWORD)
        raw.post("/v1/auth/login", json={"username": username, "password": WRONG_PASSWORD})
        phone.login(username=username, password=PASSWORD)
        tablet.login(username=username, password=PASSWORD)
        assert phone.get("/v1/me").status_code == 200
        time.sleep(1.2)
        phone.get("/v1/me")  # proactive refresh
        proxy.drop_responses["/v1/auth/refresh"] = 1
        time.sleep(1.2)
        phone.get("/v1/me")  # refresh whose response is lost: replayed inside the grace
        # A thief replays the tablet's refresh token after it rotated and the grace passed.
        stolen = tablet._core.tokens.refresh_token
        time.sleep(1.2)
        tablet.get("/v1/me")
        time.sleep(GRACE_SECONDS + 0.5)
        assert raw.post("/v1/auth/refresh", json={"refresh_token": stolen}).status_code == 401
        with pytest.raises(SessionRevokedError):
            tablet.get("/v1/me")
        # A token in a URL: refused, its session revoked, and the value never logged.
        other = api.login(username)
        leaked = raw.get("/v1/me", params={"access_token": other["access_token"]})
        assert leaked.status_code == 400
        third = api.login(username, device_name="Old laptop")
        listed = {s.session_id for s in phone.sessions()}
        assert third["session_id"] in listed
        phone.revoke_session(third["session_id"])  # DELETE /v1/auth/sessions/<id>
        phone.reauthenticate(password=PASSWORD)
        with pytest.raises(InvalidCredentialsError):
            phone.reauthenticate(password=WRONG_PASSWORD)
        phone.post("/v1/me/sensitive", json={})
        phone.change_password(current_password=PASSWORD, new_password=NEW_PASSWORD)
        phone.logout_all(scope="others")
        phone.get("/v1/me")
        phone.logout()
    finally:
        for closeable in (phone, tablet, raw, api):
            closeable.close()


def test_one_full_run_leaks_no_token_password_or_session_id_anywhere(
    audited_server: ServerProcess, recording_proxy: LoopbackProxy, tmp_path: Path,
    captured_logs: tuple[io.StringIO, io.StringIO], request: pytest.FixtureRequest,
) -> None:
    secure_dir = tmp_path / "secure-store"
    secure_dir.mkdir()
    _sdk_run(recording_proxy, audited_server, secure_dir)
    demo_texts: list[str] = []
    demo_secrets: list[str] = []
    if HAVE_DEMO:
        run = request.getfixturevalue("run_demo")
        demo_api = Api(audited_server.base_url)
        username = demo_api.register(unique_username("audit-demo"))
        second = demo_api.login(username, device_name="Second phone")
        demo = run("sign_in_profile_and_sessions", recording_proxy.base_url,
                   username=username, password=PASSWORD)
        demo_api.close()
        demo_texts += [demo.log, demo.output]
        demo_secrets += [*demo.secrets, second["access_token"], second["refresh_token"],
                         second["session_id"]]
    filtered, unfiltered = (s.getvalue() for s in captured_logs)

    wire = _secrets_on_the_wire(recording_proxy)
    tokens = wire["token"] | {s for s in demo_secrets if s.startswith(("eyJ", "lkr_"))}
    session_ids = wire["session_id"] | {s for s in demo_secrets
                                        if not s.startswith(("eyJ", "lkr_"))}
    passwords = wire["password"] | {PASSWORD, NEW_PASSWORD, WRONG_PASSWORD}
    # The run really produced secrets of every kind (and the collection really works).
    assert len(tokens) >= 20 and len(session_ids) >= 5, (len(tokens), len(session_ids))
    assert {PASSWORD, NEW_PASSWORD, WRONG_PASSWORD} <= wire["password"]

    audited_server.stop()  # flush every log line; the embedded store stays readable below
    server_out = audited_server.logs()
    # The outputs searched are the real ones: lines of each kind are present.
    assert '"event": "session_created"' in server_out
    assert '"refresh_token_reused"' in server_out and '"token_in_url"' in server_out
    assert 'GET /v1/me HTTP/1.1\\" 200' in server_out  # gunicorn's own (JSON) access log
    assert "HTTP Request: POST" in unfiltered  # httpx logged at DEBUG in this process
    assert "refresh outcome unknown" in unfiltered  # the SDK's own DEBUG/INFO lines

    everywhere = {"server stdout/stderr": server_out, "logs through the SDK filter": filtered,
                  "the SDK's own records, unfiltered": "\n".join(
                      line for line in unfiltered.splitlines()
                      if line.startswith("latchkey_client"))}
    # Unfiltered, httpx prints request URLs (so a DELETE's session id: that is why the SDK
    # ships the filter), but no library in the run may print a token or a password.
    for secret in tokens | passwords:
        assert secret not in unfiltered, f"a token or password ({secret[:6]}...) was logged"
    everywhere.update({f"demo output {i}": text for i, text in enumerate(demo_texts)})
    instance = audited_server.instance_path
    for path in instance.rglob("*"):
        rel = path.relative_to(instance)
        store_data = rel.parts[0] == "redis" and path.suffix != ".log"  # checked below
        if path.is_file() and rel.parts[0] != "keys" and not store_data:
            everywhere[f"instance/{rel}"] = path.read_bytes().decode("latin-1")
    assert any(name.startswith("instance/prometheus") for name in everywhere)
    for where, text in everywhere.items():
        for secret in tokens | session_ids | passwords:
            assert secret not in text, f"a secret ({secret[:6]}...) leaked into {where}"

    # The store: started again from its own files (the AOF), then dumped every way.
    sock = _restart_embedded_store(instance)
    try:
        store = _store_dump(sock, tmp_path).decode("latin-1")
    finally:
        subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], capture_output=True,
                       timeout=30, check=False)
    assert "lk:{u:" in store and any(s in store for s in session_ids)  # keys: by design
    for secret in tokens | passwords:
        assert secret not in store, f"a token or password ({secret[:6]}...) is in the store"

    # The secure store is encrypted: the refresh token it held is not in it in clear.
    blob = (secure_dir / "tokens.bin").read_bytes() if (secure_dir / "tokens.bin").exists() \
        else b""
    assert all(t.encode() not in blob for t in tokens)


def _restart_embedded_store(instance: Path) -> str:
    """Start redis-server on the instance's store directory (its AOF) on a unix socket."""
    from latchkey_server.embedded import redis_server_binary

    data = instance / "redis"
    sock = str(data / "audit.sock")
    if len(sock) > 100:
        pytest.skip("instance path too long for a unix socket")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", sock, "--dir", str(data),
         "--appendonly", "yes", "--appendfilename", "latchkey.aof",
         "--dbfilename", "latchkey.rdb", "--daemonize", "no", "--save", "",
         # Valkey serves `redis-cli --rdb` diskless after a 5 s delay by default; a disk
         # sync starts at once.
         "--repl-diskless-sync", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if os.path.exists(sock):
            try:
                if redis.Redis(unix_socket_path=sock).ping():
                    return sock
            except redis.exceptions.ConnectionError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("could not restart the embedded store from its files")
