"""The fuzzers' server: real, on loopback, with its throttles out of the way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory,
                redis_server) -> Iterator[ServerProcess]:
    """A server of each fuzz module's own, so its traffic disturbs no other test.

    The fuzzers send thousands of invalid tokens and logins a minute from one address; the
    throttles (proved in tests/server) would rightly answer 429 and hide everything else.
    The admin HTTP view is on, so its operations are fuzzed too.
    """
    unlimited = str(10**9)
    server = start_server(tmp_path_factory.mktemp("fuzz"), {
        "LATCHKEY_LOG_LEVEL": "WARNING",
        "LATCHKEY_INVALID_TOKENS_PER_IP": unlimited,
        "LATCHKEY_LOGIN_FAILURES_PER_IP": unlimited,
        "LATCHKEY_LOGIN_FAILURES_PER_ACCOUNT": unlimited,
        "LATCHKEY_REGISTRATION_FAILURES_PER_IP": unlimited,
        "LATCHKEY_ADMIN_HTTP": "true",
    }, redis_url=redis_server.url)
    yield server
    server.stop()
