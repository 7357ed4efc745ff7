"""Errors nobody planned for still answer as problem details, and logs stay scrubbed."""

from __future__ import annotations

import logging

from gunicorn.config import Config
from latchkey_server.serving import RedactingGunicornLogger


def test_failure_after_the_view_is_an_internal_error_with_correlation_id(app, caplog):
    @app.after_request
    def broken(response):  # a hook of ours failing after the view ran
        raise RuntimeError("boom")

    r = app.test_client().get("/healthz")
    assert r.status_code == 500
    body = r.get_json()
    assert body["code"] == "internal_error" and body["correlation_id"]
    assert "boom" not in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)


def test_gunicorn_logger_scrubs_every_level_and_its_arguments(caplog):
    logger = RedactingGunicornLogger(Config())
    logger.error_log.propagate = True
    session_id = "A" * 32
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    with caplog.at_level(logging.DEBUG, logger="gunicorn.error"):
        logger.error_log.setLevel(logging.DEBUG)
        logger.debug("%s %s", "DELETE", f"/v1/auth/sessions/{session_id}")
        logger.info("token %s", jwt_like)
        logger.warning(f"/v1/files/{jwt_like}")
    text = caplog.text
    assert session_id not in text and jwt_like not in text
    # One line per call; a record may reach caplog twice when an earlier test in the same
    # process left a propagating handler on the gunicorn loggers, so count distinct lines.
    lines = {record.getMessage() for record in caplog.records if record.name == "gunicorn.error"}
    assert len(lines) == 3 and all("[redacted]" in line.lower() for line in lines), lines
