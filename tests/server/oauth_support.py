"""Helpers for the OAuth tests: register clients with the real CLI, read a token's parts."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import VENV_BIN, Api, ServerProcess

DEFAULT_CLIENT_ID = "latchkey-app"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
GRACE_SECONDS = 2


def grace_server_fixtures() -> tuple[Any, Any]:
    """Return a module's ``server`` and ``api`` fixtures, overriding conftest's ``api``.

    ``server`` has a 2 s grace window, so a retry after it can be shown quickly; ``api``
    is an :class:`Api` helper bound to it. Fresh functions per call, so each module owns
    its own fixtures (``server, api = grace_server_fixtures()``).
    """

    @pytest.fixture(scope="module")
    def server(module_server_factory: Callable[..., ServerProcess]) -> ServerProcess:
        return module_server_factory(refresh_reuse_grace=GRACE_SECONDS)

    @pytest.fixture
    def api(server: ServerProcess) -> Iterator[Api]:
        client = Api(server.base_url)
        yield client
        client.close()

    return server, api


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``latchkey-server`` with a running server's environment, as an operator would."""
    return subprocess.run([str(VENV_BIN / "latchkey-server"), *args], env=server.env,
                          capture_output=True, text=True, timeout=60)


def create_client(server: ServerProcess, client_type: str, name: str = "test") -> dict[str, str]:
    """Register a client through ``latchkey-server clients create``; return its JSON."""
    result = cli(server, "clients", "create", "--name", name, "--type", client_type)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def basic(client_id: str, secret: str) -> dict[str, str]:
    """Return an ``Authorization: Basic`` header for client credentials."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a JWT's header and claims without verifying it (to look, not to trust)."""
    def part(text: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    header, claims, _ = token.split(".")
    return part(header), part(claims)
