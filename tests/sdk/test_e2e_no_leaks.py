"""No token in logs, reprs or exceptions for a full run at DEBUG (D1, S1), and SPKI pinning
checked on the TLS connection before any request byte (X2).

The client tests run on the sync and the async client (the ``sdk`` fixture)."""

from __future__ import annotations

import io
import json
import logging
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from latchkey_client import (
    InvalidCredentialsError,
    NotSignedInError,
    PinningError,
    install_redaction,
)

from tests.conftest import ServerProcess

from .certs import make_key, self_signed, spki_pin, write_cert_and_key
from .conftest import PASSWORD, Sdk, make_user


def tokens_seen_by(proxy: Any) -> set[str]:
    """Every token that crossed the wire, from the bodies and headers the proxy saw."""
    found: set[str] = set()
    for seen in proxy.seen:
        auth = seen.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            found.add(auth[7:])
        for raw in (seen.body, seen.response_body):
            try:
                doc = json.loads(raw or b"null")
            except ValueError:
                continue
            if isinstance(doc, dict):
                found.update(str(doc[k]) for k in ("access_token", "refresh_token") if k in doc)
    return found


def test_full_flow_at_debug_leaves_no_token_in_logs_reprs_or_errors(
    short_ttl_server: ServerProcess, proxy_to: Any, sdk: Sdk
) -> None:
    proxy = proxy_to(short_ttl_server)
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    raw_sdk_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw_sdk_records.append(record)

    keep = Keep()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    logging.getLogger("latchkey_client").addHandler(keep)  # the SDK's records, unfiltered
    redaction = install_redaction(root)
    texts: list[str] = []
    try:
        user = make_user(short_ttl_server)
        client = sdk(proxy)
        texts += [repr(client), repr(client.auth), repr(client._core), repr(client._core.tokens)]
        with pytest.raises(InvalidCredentialsError) as bad:
            client.login(username=user, password="definitely not it")
        texts += [str(bad.value), repr(bad.value)]
        info = client.login(username=user, password=PASSWORD)
        texts += [repr(info), repr(client), repr(client._core.tokens)]
        client.get("/v1/me")
        time.sleep(1.1)
        client.get("/v1/me")  # proactive refresh
        proxy.drop_responses["/v1/auth/refresh"] = 1
        time.sleep(2.1)
        client.get("/v1/me")  # refresh with a lost response and a replay
        client.reauthenticate(password=PASSWORD)
        client.sessions()
        # The app itself logging a token by mistake is masked by the installed filter.
        logging.getLogger("app").debug("oops %s", client._core.tokens.refresh_token)
        client.logout()
        with pytest.raises(NotSignedInError) as gone:
            client.get("/v1/me")
        texts += [str(gone.value), repr(client)]
        client.close()
    finally:
        root.removeHandler(handler)
        logging.getLogger("latchkey_client").removeHandler(keep)
        root.setLevel(old_level)
        # install_redaction also filtered pytest's own capture handler, which lives for the
        # whole session: take the filter off again so later tests see their records as is.
        for other in root.handlers:
            other.removeFilter(redaction)
    tokens = tokens_seen_by(proxy)
    assert len(tokens) >= 8  # logins, refreshes, replays, reauth: plenty to leak
    captured = stream.getvalue()
    assert "HTTP Request" in captured  # httpx/httpcore really logged at DEBUG
    sdk_text = "\n".join(r.getMessage() for r in raw_sdk_records)
    assert "refresh outcome unknown" in sdk_text
    for token in tokens:
        assert token not in captured
        assert token not in sdk_text  # the SDK never logs one, filter or not
        assert all(token not in t for t in texts)
    assert PASSWORD not in captured and all(PASSWORD not in t for t in texts)


@pytest.fixture
def tls_proxy(short_ttl_server: ServerProcess, proxy_to: Any, tmp_path: Path
              ) -> tuple[Any, Path, str]:
    cert_path, key_path, cert = write_cert_and_key(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return proxy_to(short_ttl_server, ssl_context=ctx), cert_path, spki_pin(cert)


def test_matching_spki_pin_connects_over_tls(short_ttl_server: ServerProcess,
                                             tls_proxy: tuple[Any, Path, str], sdk: Sdk) -> None:
    proxy, ca, pin = tls_proxy
    backup = spki_pin(self_signed(make_key()))
    with sdk(proxy, verify=str(ca), pins=[backup, f"sha256/{pin}"]) as client:
        client.login(username=make_user(short_ttl_server), password=PASSWORD)
        assert client.get("/v1/me").status_code == 200
        client.logout()


def test_wrong_spki_pin_fails_the_connection_before_any_request(
    tls_proxy: tuple[Any, Path, str], sdk: Sdk
) -> None:
    proxy, ca, pin = tls_proxy
    wrong = spki_pin(self_signed(make_key()))
    with sdk(proxy, verify=str(ca), pins=[wrong]) as client:
        with pytest.raises(PinningError):
            client.login(username="anyone", password=PASSWORD)
    assert proxy.seen == []  # not one HTTP request was written to that connection
    with sdk(proxy, verify=str(ca), pins=[pin]) as client:
        with pytest.raises(InvalidCredentialsError):  # the right pin reaches the server
            client.login(username="anyone", password=PASSWORD)


def test_sdk_installs_and_imports_without_server_or_platform_packages() -> None:
    code = (
        "import sys, latchkey_client\n"
        "heavy = ['flask', 'redis', 'latchkey_server', 'werkzeug', 'keyring', 'cryptography',"
        " 'jnius', 'pyobjus']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    pyproject = Path(__file__).parents[2] / "client_sdk" / "pyproject.toml"
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    assert project["dependencies"] == ["httpx>=0.27"]
