"""Fixtures for the examples' end-to-end tests: each example under its real server.

A *deployment* is a real redis-server of its own, a real ``latchkey-server`` on loopback
against it, and both example APIs started as a backend team would start them: the Flask
one under gunicorn (``examples/flask_api``), the FastAPI one under uvicorn
(``examples/fastapi_api``), configured only by ``LATCHKEY_ISSUER`` and ``LATCHKEY_REDIS_URL``.
Each deployment has its own Redis because the token server publishes its session policy
to one key there (``lk:{policy}``): two deployments with different settings on one store
would share the last one's.

Deployments are module-scoped: a module starts the few it needs once and its tests share
them, so the whole directory runs in well under two minutes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from latchkey_client import LatchkeyClient
from latchkey_server.processes import stop_process

from tests.conftest import (
    PASSWORD,
    VENV_BIN,
    Api,
    RedisProcess,
    ServerProcess,
    free_port,
    start_redis,
    unique_username,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KINDS = ("flask", "fastapi")
#: The protected endpoint of both examples, and the open one.
HELLO, HEALTHZ = "/api/hello", "/healthz"
DEVICE = "phone-example-1"
#: How each example is started: its server's command and the app it serves, as its README says.
APP_SPECS = {"flask": ("gunicorn", "app:create_app()"), "fastapi": ("uvicorn", "main:create_app")}


@dataclass
class ExampleProcess:
    """One example API under its real server (gunicorn or uvicorn) on loopback."""

    kind: str
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path

    def stop(self) -> None:
        stop_process(self.proc, timeout_seconds=20)


def start_example(kind: str, *, issuer: str, redis_url: str, log_dir: Path,
                  workers: int = 1) -> ExampleProcess:
    """Start the ``kind`` example the way its README says, and wait for ``/healthz``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    env.update(LATCHKEY_ISSUER=issuer, LATCHKEY_REDIS_URL=redis_url)
    server, target = APP_SPECS[kind]
    if kind == "flask":
        argv = [str(VENV_BIN / server), "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--chdir", str(EXAMPLES / "flask_api"), target]
    else:
        argv = [str(VENV_BIN / server), "--factory", target,
                "--app-dir", str(EXAMPLES / "fastapi_api"), "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    example = ExampleProcess(kind, f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {kind} example exited:\n{example.logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(example.url(HEALTHZ), timeout=1).status_code == 200:
                return example
        time.sleep(0.05)
    example.stop()
    raise RuntimeError(f"the {kind} example did not start:\n{example.logs()}")


@dataclass
class Deployment:
    """A Latchkey server, its own Redis, and the example APIs in front of the same store."""

    redis: RedisProcess
    server: ServerProcess
    examples: dict[str, ExampleProcess] = field(default_factory=dict)

    def new_user(self) -> str:
        api = Api(self.server.base_url)
        try:
            return api.register(unique_username("example"))
        finally:
            api.close()

    def client(self, kind: str, **options: Any) -> LatchkeyClient:
        """An SDK client that names this deployment's ``kind`` example as an API origin."""
        options.setdefault("idle_logout", False)
        options.setdefault("device_id", DEVICE)
        return LatchkeyClient(base_url=self.server.base_url,
                              api_origins=[self.examples[kind].base_url], **options)

    def signed_in(self, kind: str, **options: Any) -> tuple[LatchkeyClient, str]:
        """A new user signed in through the SDK; the client and the username."""
        username = self.new_user()
        client = self.client(kind, **options)
        client.login(username=username, password=PASSWORD)
        return client, username


class Deployments:
    """Start deployments for one module; stop every process at the end."""

    def __init__(self, tmp: pytest.TempPathFactory,
                 server_factory: Callable[..., ServerProcess]) -> None:
        self._tmp = tmp
        self._server_factory = server_factory
        self.redises: list[RedisProcess] = []
        self.examples: list[ExampleProcess] = []

    def start_redis(self, data_dir: Path | None = None, port: int | None = None
                    ) -> RedisProcess:
        """A redis-server that keeps its data across a restart (AOF, fsync always)."""
        redis = start_redis(data_dir or self._tmp.mktemp("example-redis"), port,
                            "--appendonly", "yes", "--appendfsync", "always")
        self.redises.append(redis)
        return redis

    def __call__(self, *, kinds: tuple[str, ...] = KINDS, workers: int = 1,
                 **settings: Any) -> Deployment:
        redis = self.start_redis()
        server = self._server_factory(store_url=redis.url, **settings)
        deployment = Deployment(redis, server)
        for kind in kinds:
            example = start_example(kind, issuer=server.base_url, redis_url=redis.url,
                                    log_dir=server.instance_path, workers=workers)
            self.examples.append(example)
            deployment.examples[kind] = example
        return deployment

    def stop_all(self) -> None:
        for example in self.examples:
            example.stop()
        for redis in self.redises:
            redis.stop()


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory,
                module_server_factory: Callable[..., ServerProcess]
                ) -> Iterator[Deployments]:
    started = Deployments(tmp_path_factory, module_server_factory)
    yield started
    started.stop_all()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which example a test runs against: Flask under gunicorn, FastAPI under uvicorn."""
    return str(request.param)
