"""Request ids: a safe ``X-Request-ID`` is kept, anything else replaced; both are echoed
and on every log line of the request; a valid W3C ``traceparent`` adds ``trace_id`` and
``span_id``; a 500's correlation id is the request id. Bad ids are never a 500.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from latchkey_server.access_log import parse_traceparent

from tests.server.ops_support import sign_in

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID_TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
GENERATED = re.compile(r"[0-9a-f]{32}")

BAD_REQUEST_IDS = [
    "x" * 65,                              # longer than 64
    "has space",
    "comma,separated",
    "quote\"inside",
    "semi;colon",
    "slash/inside",
    "\u00e9t\u00e9",                       # not ASCII
    "lkr_" + "A" * 40,                     # token-shaped: never logged, never echoed
]

BAD_TRACEPARENTS = [
    "",
    "00-" + TRACE_ID + "-" + PARENT_ID,                           # no flags
    "00-" + TRACE_ID.upper() + "-" + PARENT_ID + "-01",           # uppercase hex
    "00-" + "0" * 32 + "-" + PARENT_ID + "-01",                   # all-zero trace-id
    "00-" + TRACE_ID + "-" + "0" * 16 + "-01",                    # all-zero parent-id
    "ff-" + TRACE_ID + "-" + PARENT_ID + "-01",                   # version ff
    "00-" + TRACE_ID + "-" + PARENT_ID + "-01-extra",             # version 00 has 4 fields
    "0-" + TRACE_ID + "-" + PARENT_ID + "-01",
    "00-" + TRACE_ID[:-1] + "-" + PARENT_ID + "-01",              # short trace-id
    "00-" + TRACE_ID + "-" + PARENT_ID + "-1",
    "00_" + TRACE_ID + "_" + PARENT_ID + "_01",
    f"{VALID_TRACEPARENT},{VALID_TRACEPARENT}",                   # two headers joined
    "00-" + TRACE_ID + "-" + PARENT_ID + "-01" + "-" * 600,       # absurdly long
]


def lines_with(server, needle: str) -> list[dict]:
    """Return the JSON log lines of ``server`` whose text contains ``needle``."""
    return [json.loads(line) for line in server.logs().splitlines() if needle in line]


def test_a_valid_request_id_is_echoed_and_on_every_log_line_of_its_request(
        server_factory) -> None:
    server = server_factory(gunicorn_access_log="1")
    _, tokens = sign_in(server)
    request_id = "client-req.42_A"
    # A leaked token in the URL: the transport check logs a security event before the
    # view runs, so the id has to be assigned ahead of it.
    r = httpx.get(server.base_url + "/healthz", headers={"X-Request-ID": request_id},
                  params={"access_token": tokens["access_token"]})
    assert r.status_code == 400
    assert r.headers["X-Request-ID"] == request_id
    server.stop()
    lines = lines_with(server, request_id)
    assert {line["logger"] for line in lines} >= {
        "latchkey.security", "latchkey.access", "gunicorn.access"}
    assert all(line["request_id"] == request_id for line in lines)


def test_without_a_request_id_each_request_gets_a_new_one(live_server) -> None:
    seen = {httpx.get(live_server.base_url + "/healthz").headers["X-Request-ID"]
            for _ in range(3)}
    assert len(seen) == 3
    assert all(GENERATED.fullmatch(value) for value in seen)


@pytest.mark.parametrize("bad", BAD_REQUEST_IDS)
def test_an_unsafe_request_id_is_replaced_never_refused(live_server, bad: str) -> None:
    r = httpx.get(live_server.base_url + "/healthz",
                  headers=[("X-Request-ID", bad.encode())])
    assert r.status_code == 200
    assert GENERATED.fullmatch(r.headers["X-Request-ID"])
    assert bad not in live_server.logs()


def test_two_request_id_headers_are_replaced_by_one_generated(live_server) -> None:
    r = httpx.get(live_server.base_url + "/healthz",
                  headers=[("X-Request-ID", "one"), ("X-Request-ID", "two")])
    assert r.status_code == 200
    assert GENERATED.fullmatch(r.headers["X-Request-ID"])


def test_a_valid_traceparent_puts_trace_and_span_ids_on_the_request_lines(
        live_server) -> None:
    request_id = "trace-check-7f3a"
    r = httpx.get(live_server.base_url + "/v1/me",
                  headers={"X-Request-ID": request_id, "traceparent": VALID_TRACEPARENT})
    assert r.status_code == 401
    lines = lines_with(live_server, request_id)
    assert lines
    assert all((line["trace_id"], line["span_id"]) == (TRACE_ID, PARENT_ID)
               for line in lines)


@pytest.mark.parametrize("bad", BAD_TRACEPARENTS)
def test_an_invalid_traceparent_is_ignored_never_refused(live_server, bad: str) -> None:
    assert parse_traceparent(bad) is None
    request_id = "bad-trace-" + str(BAD_TRACEPARENTS.index(bad))
    r = httpx.get(live_server.base_url + "/healthz",
                  headers={"X-Request-ID": request_id, "traceparent": bad})
    assert r.status_code == 200
    lines = lines_with(live_server, f'"request_id": "{request_id}"')
    assert lines and all("trace_id" not in line for line in lines)


def test_a_later_traceparent_version_with_more_fields_is_accepted() -> None:
    # Trace Context 3.2.4: parse the fields we know, ignore what a later version adds.
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-comes-next") == (
        TRACE_ID, PARENT_ID)
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01") == (TRACE_ID, PARENT_ID)
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01x") is None


def test_the_correlation_id_of_an_internal_error_is_the_request_id(app) -> None:
    @app.after_request
    def broken(response):  # a hook of ours failing after the view ran
        raise RuntimeError("boom")

    r = app.test_client().get("/healthz", headers={"X-Request-ID": "corr-1234"})
    assert r.status_code == 500
    # The failing hook fails again on the error response, so the echo may not happen:
    # the body still lets the client quote the id that finds the traceback in the log.
    assert r.get_json()["correlation_id"] == "corr-1234"
