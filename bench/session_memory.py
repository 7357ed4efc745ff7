"""Measure Redis memory per live session over many sessions, through the real store.

Sessions are created by the same Lua script the server uses (``create_session``), one
user per session (the common case: a user on one phone), with a realistic device name,
user agent and IPv4 address. Memory is Redis's own ``used_memory`` delta divided by the
number of sessions, so it includes the session hash, the user's session index and key
overhead. The user record is measured separately (it exists whether or not the user is
signed in).

Run: ``.venv/bin/python -m bench.session_memory [--sessions 100000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from latchkey_server.config import load_settings
from latchkey_server.store import SessionStore, connect
from latchkey_server.tokens import new_session_id, new_user_id

from bench.harness import print_json, start_redis

UA = "LatchkeyDemo/1.0 (Android 14; Pixel 8) okhttp/4.12"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        redis_proc = start_redis(Path(tmp) / "redis", None, "--unixsocket", str(sock))
        try:
            settings = load_settings({}, {"instance_path": Path(tmp) / "i",
                                          "redis_url": f"unix://{sock}"})
            client = connect(settings, f"unix://{sock}")
            store = SessionStore(client, settings)
            user_ids = [new_user_id() for _ in range(args.sessions)]
            before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            for i, user_id in enumerate(user_ids):
                store.create_session(
                    user_id=user_id, session_id=new_session_id(),
                    refresh_hash="x" * 22, auth_level="normal",
                    auth_time=int(time.time()), device_id=f"device-{i:08d}",
                    device_name="Pixel 8", user_agent=UA, ip="203.0.113.77")
            elapsed = time.perf_counter() - started
            after = client.info("memory")["used_memory"]
            before_users = after
            for user_id in user_ids[:10_000]:
                store.create_user(user_id, f"user-{user_id[:10]}", "$argon2id$" + "x" * 87,
                                  "2026-11-22T10:00:00Z")
            per_user = (client.info("memory")["used_memory"] - before_users) / 10_000
            print_json({
                "sessions": args.sessions,
                "bytes_per_live_session": round((after - before) / args.sessions, 1),
                "bytes_per_user_record": round(per_user, 1),
                "session_creates_per_second": round(args.sessions / elapsed, 1),
                "redis_version": client.info("server")["redis_version"],
            })
        finally:
            redis_proc.stop()


if __name__ == "__main__":
    main()
