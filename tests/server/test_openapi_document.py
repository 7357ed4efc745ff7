"""The served /openapi.json says what the server really does (issue 13, item 10).

Admin paths appear only where the admin HTTP view is served; the logout body is optional
with a Bearer token, as the server treats it. Real servers on loopback.
"""

from __future__ import annotations

import re

import httpx

from tests.conftest import Api, ServerProcess

ADMIN_PATHS = {"/v1/admin/sessions", "/v1/admin/sessions/revoke"}


def document(server: ServerProcess) -> dict:
    return httpx.get(server.base_url + "/openapi.json").json()


def test_admin_paths_are_neither_served_nor_published_by_default(live_server: ServerProcess):
    doc = document(live_server)
    assert not ADMIN_PATHS & set(doc["paths"])
    assert not [name for name in doc["components"]["schemas"] if name.startswith("Admin")]
    r = httpx.get(live_server.base_url + "/v1/admin/sessions", params={"username": "x"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_admin_paths_are_published_where_the_admin_view_is_on(server_factory):
    server = server_factory(admin_http="true")
    assert ADMIN_PATHS <= set(document(server)["paths"])
    # Served: without a session it is a 401, not the 404 of a path that does not exist.
    r = httpx.get(server.base_url + "/v1/admin/sessions", params={"username": "x"})
    assert r.status_code == 401


def test_logout_documents_an_optional_refresh_token_and_bearer_only_logout_works(
        live_server: ServerProcess, api: Api):
    doc = document(live_server)
    body = doc["paths"]["/v1/auth/logout"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["required"] is False and "refresh_token" not in schema.get("required", [])
    assert re.fullmatch(schema["properties"]["refresh_token"]["pattern"], "lkr_" + "A" * 102)
    _, tokens = api.new_user_session()
    r = api.http.post("/v1/auth/logout", json={},
                      headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 204
    assert api.me(tokens["access_token"]).json()["reason"] == "logout"


def test_the_login_device_id_is_published_with_the_headers_pattern(live_server: ServerProcess):
    doc = document(live_server)
    login = doc["paths"]["/v1/auth/login"]["post"]
    header = next(p for p in login["parameters"] if p["name"] == "X-Device-Id")
    field = doc["components"]["schemas"]["LoginRequest"]["properties"]["device_id"]
    assert field["pattern"] == header["schema"]["pattern"]
