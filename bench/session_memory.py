"""Measure Redis memory per live session over many sessions, through the real store.

Sessions are created by the same Lua script the server uses (``create_session``), one
user per session (the common case: a user on one phone), with a realistic device name,
user agent, IPv4 address and device id (a UUID, as the demo app sends). The users are
created first and measured on their own (a user record exists whether or not the user is
signed in); memory per session is then Redis's own ``used_memory`` delta over creating the
sessions, divided by their number: everything a session adds, its field in the user's
record and the growth of that record's hash table included. Last, every session logs
out, and what its retained record costs is measured too.

It runs twice, on a redis-server with the configuration Latchkey's embedded store uses
and recommends (``RECOMMENDED_REDIS_CONFIG``: small hashes stay compact listpacks even with
a password hash or a session record in them) and on one with Redis's defaults.

Run: ``.venv/bin/python -m bench.session_memory [--sessions 100000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from latchkey_server.config import load_settings
from latchkey_server.redis_connection import connect
from latchkey_server.store import (
    RECOMMENDED_REDIS_CONFIG,
    SessionStore,
    recommended_redis_args,
    user_key,
)
from latchkey_server.tokens import new_session_id, new_user_id

from bench.harness import print_json, start_redis

UA = "LatchkeyDemo/1.0 (Android 14; Pixel 8) okhttp/4.12"


def measure(sessions: int, redis_args: list[str]) -> dict[str, Any]:
    """Create ``sessions`` users, then one session each, on a fresh redis-server."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_redis(Path(tmp) / "redis", None, "--unixsocket", str(sock),
                                 *redis_args)
        try:
            settings = load_settings({}, {"instance_path": Path(tmp) / "i",
                                          "redis_url": f"unix://{sock}"})
            client = connect(settings, f"unix://{sock}")
            store = SessionStore(client, settings)
            user_ids = [new_user_id() for _ in range(sessions)]
            before_users = client.info("memory")["used_memory"]
            for user_id in user_ids:
                store.create_user(user_id, f"user-{user_id[:10]}", "$argon2id$" + "x" * 87,
                                  "2026-11-22T10:00:00Z")
            before = client.info("memory")["used_memory"]
            session_ids = [new_session_id() for _ in user_ids]
            started = time.perf_counter()
            for user_id, session_id in zip(user_ids, session_ids, strict=True):
                store.create_session(
                    user_id=user_id, session_id=session_id,
                    refresh_hash="x" * 22, auth_level="normal",
                    auth_time=int(time.time()), device_id=uuid.uuid4().hex,
                    device_name="Pixel 8", user_agent=UA, ip="203.0.113.77")
            elapsed = time.perf_counter() - started
            after_create = client.info("memory")["used_memory"]
            # One protected request per session, as follows every real sign-in.
            for user_id, session_id in zip(user_ids, session_ids, strict=True):
                store.verify_touch(user_id, session_id, user_agent=UA)
            after_use = client.info("memory")["used_memory"]
            # Then every session logs out: its record stays for the retention period.
            for user_id in user_ids:
                store.end_sessions(user_id, scope="all")
            after_end = client.info("memory")["used_memory"]
            return {
                "bytes_per_live_session": round((after_create - before) / sessions, 1),
                "bytes_per_live_session_after_first_request":
                    round((after_use - before) / sessions, 1),
                "bytes_per_ended_session_record": round((after_end - before) / sessions, 1),
                "bytes_per_user_record": round((before - before_users) / sessions, 1),
                "user_record_encoding": client.object("encoding", user_key(user_ids[0])),
                "session_creates_per_second": round(sessions / elapsed, 1),
                "redis_version": client.info("server")["redis_version"],
            }
        finally:
            redis_proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()
    recommended = recommended_redis_args()
    print_json({
        "sessions": args.sessions,
        "recommended_config": RECOMMENDED_REDIS_CONFIG,
        "with_recommended_config": measure(args.sessions, recommended),
        "with_redis_defaults": measure(args.sessions, []),
    })


if __name__ == "__main__":
    main()
