"""Fuzz every operation of the server's own ``/openapi.json`` with Schemathesis.

Every generated request — valid, boundary and invalid — must get a response that the
document allows: no 5xx ever, documented status codes, problem+json errors, response
bodies that match their schemas. Operations that need a session get a fresh, real one per
case, so fuzzing logout, re-authentication or password change cannot starve the rest.
Logout, whose Bearer token is optional, is sent in both forms: with a session's Bearer
token, or without one and (half the time) a real refresh token in the generated body.
The admin HTTP view is switched on, so its operations are fuzzed too.
At least 1000 cases per run (operations x ``MAX_EXAMPLES``), bounded in time.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSWORD, ServerProcess, unique_username

MAX_EXAMPLES = 80
MIN_TOTAL_CASES = 1000

# A schema-valid password can still be common or contain the username: that 422
# weak_password is a documented semantic refusal no JSON Schema can express, so it is an
# accepted answer to valid data on the two operations that take a new password.
# On the OAuth endpoints, a schema-valid token that names no session, or a request
# without the client's credentials, is RFC 6749's 400 invalid_grant / invalid_client.
FUZZ_CONFIG = schemathesis.Config.from_dict({
    "operations": [{
        "include-path-regex": "^/v1/auth/(register|password)$",
        "checks": {"positive_data_acceptance": {
            "expected-statuses": ["2xx", "401", "403", "409", "422", "429"]}},
    }, {
        "include-path-regex": "^/oauth/",
        "checks": {"positive_data_acceptance": {
            "expected-statuses": ["2xx", "400", "401", "429"]}},
    }],
})


def _fresh_session(http: httpx.Client, username: str) -> dict[str, str]:
    r = http.post("/v1/auth/login", json={"username": username, "password": PASSWORD})
    r.raise_for_status()
    return r.json()


def _property_for(operation, base_url: str, http: httpx.Client, username: str,
                  counted: dict[str, int]):
    """Return a Hypothesis property that sends generated cases of one operation."""
    security = operation.definition.raw.get("security", [{}])
    # [{"bearer": []}, {}]: a Bearer token is optional (logout); [] or [{}]: none is used.
    optional_session = {} in security and len(security) > 1
    needs_session = bool(security) and {} not in security

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(),
           form=st.sampled_from(["bearer", "real_refresh_token", "as_generated"]))
    def check(case, form: str) -> None:
        counted["cases"] += 1
        headers = {}
        if needs_session or (optional_session and form == "bearer"):
            headers["Authorization"] = f"Bearer {_fresh_session(http, username)['access_token']}"
        elif optional_session and form == "real_refresh_token" and isinstance(case.body, dict):
            case.body["refresh_token"] = _fresh_session(http, username)["refresh_token"]
        case.call_and_validate(base_url=base_url, headers=headers)

    return check


def test_every_operation_answers_within_its_documented_contract(fuzz_server: ServerProcess):
    # Schemathesis' pytest plugin predates pytest 9, so its strategies run under
    # Hypothesis directly: one property per operation, the same checks as call_and_validate.
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json",
                                           config=FUZZ_CONFIG)
    http = httpx.Client(base_url=fuzz_server.base_url, timeout=15)
    username = unique_username("fuzz")
    http.post("/v1/auth/register", json={"username": username, "password": PASSWORD})
    counted = {"cases": 0}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        _property_for(operation, fuzz_server.base_url, http, username, counted)()
    http.close()
    assert counted["cases"] >= MIN_TOTAL_CASES
