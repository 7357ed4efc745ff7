"""R2: the OAuth clients users actually use work unchanged against a real server on
loopback: Authlib's ``OAuth2Client`` and ``AsyncOAuth2Client`` (refresh, revoke,
auto-refresh), requests-oauthlib's ``OAuth2Session.refresh_token``, Authlib's
introspection from a resource client, and PyJWT's and joserfc's verification.

Each client runs the very snippet docs/OAUTH.md shows (read from the page and executed),
so the page "Using Latchkey from standard OAuth clients" cannot drift from what works.
The reuse and grace rules are shown to hold when those clients retry.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from tests.server.oauth_support import DEFAULT_CLIENT_ID, create_client, grace_server_fixtures

OAUTH_DOC = Path(__file__).resolve().parents[2] / "docs" / "OAUTH.md"
_SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", re.S)
SNIPPETS = dict(_SNIPPET.findall(OAUTH_DOC.read_text()))

server, api = grace_server_fixtures()


def run_snippet(name: str, issuer: str, token: dict[str, Any], **names: Any) -> dict[str, Any]:
    """Execute one of docs/OAUTH.md's snippets; return its variables."""
    scope: dict[str, Any] = {"ISSUER": issuer, "token": token, **names}
    exec(compile(SNIPPETS[name], f"docs/OAUTH.md:{name}", "exec"), scope)  # noqa: S102
    return scope


def test_every_snippet_of_the_page_is_run_here():
    run_here = set(re.findall(r'run_snippet\("([\w-]+)"', Path(__file__).read_text()))
    assert set(SNIPPETS) == run_here


def test_authlib_refresh_token_gets_the_sessions_next_tokens(server, api):
    _, tokens = api.new_user_session()
    done = run_snippet("authlib-refresh", server.base_url, dict(tokens))
    new = done["token"]
    assert new["session_id"] == tokens["session_id"]
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["expires_at"] > time.time()  # Authlib understood expires_in
    assert api.me(new["access_token"]).status_code == 200


def test_authlib_raises_oauth_error_for_a_refused_refresh_instead_of_storing_it(server,
                                                                               api):
    _, tokens = api.new_user_session()
    api.http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    client = OAuth2Client(client_id=DEFAULT_CLIENT_ID, token=dict(tokens))
    with pytest.raises(OAuthError) as refused:
        client.refresh_token(f"{server.base_url}/oauth/token",
                             refresh_token=tokens["refresh_token"])
    assert refused.value.error == "invalid_grant"
    assert client.token["refresh_token"] == tokens["refresh_token"]  # nothing stored


def test_authlib_refreshes_an_expired_token_by_itself_before_the_request(server, api):
    _, tokens = api.new_user_session()
    token = {**tokens, "expires_at": int(time.time()) - 1}  # as if it ran out
    done = run_snippet("authlib-auto-refresh", server.base_url, token)
    assert done["me"]["session_id"] == tokens["session_id"]
    assert token["refresh_token"] != tokens["refresh_token"]  # update_token saved it
    assert api.refresh(token["refresh_token"]).status_code == 200  # the live chain


def test_authlib_async_client_auto_refreshes_and_revokes(server, api):
    _, tokens = api.new_user_session()
    token = {**tokens, "expires_at": int(time.time()) - 1}
    done = run_snippet("authlib-async", server.base_url, token)
    assert done["me"]["session_id"] == tokens["session_id"]
    assert token["refresh_token"] != tokens["refresh_token"]
    r = api.me(token["access_token"])
    assert r.status_code == 401 and r.json()["reason"] == "logout"


def test_authlib_revoke_token_ends_the_session(server, api):
    _, tokens = api.new_user_session()
    run_snippet("authlib-revoke", server.base_url, dict(tokens))
    r = api.me(tokens["access_token"])
    assert r.status_code == 401 and r.json()["reason"] == "logout"


def test_requests_oauthlib_refresh_token(server, api, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http, as documented
    _, tokens = api.new_user_session()
    done = run_snippet("requests-oauthlib-refresh", server.base_url, dict(tokens))
    assert done["token"]["session_id"] == tokens["session_id"]
    assert done["token"]["refresh_token"] != tokens["refresh_token"]
    assert done["me"]["session_id"] == tokens["session_id"]


def test_authlib_introspection_from_a_resource_client(server, api):
    resource = create_client(server, "resource", "orders-service")
    _, tokens = api.new_user_session()
    names = {"RESOURCE_CLIENT_ID": resource["client_id"],
             "RESOURCE_CLIENT_SECRET": resource["client_secret"]}
    info = run_snippet("authlib-introspect", server.base_url, dict(tokens), **names)["info"]
    assert info["active"] is True and info["sid"] == tokens["session_id"]
    assert info["client_id"] == DEFAULT_CLIENT_ID and info["iss"] == server.base_url
    api.http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    again = run_snippet("authlib-introspect", server.base_url, dict(tokens), **names)
    assert again["info"] == {"active": False}


def test_pyjwt_and_joserfc_verify_the_access_token_as_documented(server, api):
    _, tokens = api.new_user_session()
    claims = run_snippet("pyjwt-verify", server.base_url, dict(tokens))["claims"]
    assert claims["client_id"] == DEFAULT_CLIENT_ID and claims["sid"] == tokens["session_id"]
    with pytest.warns(Warning, match="EdDSA"):  # joserfc's SecurityWarning, documented
        verified = run_snippet("joserfc-verify", server.base_url, dict(tokens))["verified"]
    assert verified.claims["sid"] == tokens["session_id"]


def test_a_client_retrying_a_refresh_inside_grace_gets_the_same_successor(server, api):
    _, tokens = api.new_user_session()
    url = f"{server.base_url}/oauth/token"
    # Two clients holding the same token (a retry after a lost answer, or Authlib's
    # unlocked sync client refreshing from two threads) both succeed, with one successor.
    first = OAuth2Client(client_id=DEFAULT_CLIENT_ID, token=dict(tokens))
    second = OAuth2Client(client_id=DEFAULT_CLIENT_ID, token=dict(tokens))
    a = first.refresh_token(url, refresh_token=tokens["refresh_token"])
    b = second.refresh_token(url, refresh_token=tokens["refresh_token"])
    assert a["refresh_token"] == b["refresh_token"]
    assert a["session_id"] == b["session_id"] == tokens["session_id"]


def test_a_client_retrying_after_grace_is_refused_and_the_session_ends_as_reuse(server,
                                                                                api):
    _, tokens = api.new_user_session()
    url = f"{server.base_url}/oauth/token"
    new = OAuth2Client(client_id=DEFAULT_CLIENT_ID, token=dict(tokens)).refresh_token(
        url, refresh_token=tokens["refresh_token"])
    time.sleep(2.5)
    stale = OAuth2Client(client_id=DEFAULT_CLIENT_ID, token=dict(tokens))
    with pytest.raises(OAuthError) as refused:
        stale.refresh_token(url, refresh_token=tokens["refresh_token"])
    assert refused.value.error == "invalid_grant"
    r = api.me(new["access_token"])
    assert r.status_code == 401 and r.json()["reason"] == "reuse"
