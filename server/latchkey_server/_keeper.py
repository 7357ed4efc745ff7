"""Keep the embedded store running while anyone uses it, and stop it when no one does.

Run as a script by ``embedded.py`` (``python .../_keeper.py DATA_DIR``, the store's argv on
stdin), so that it starts in a few milliseconds: it imports nothing of the server, only the
standard library and redis-py. It is the store's parent, in a session of its own; every
process that uses the store holds a shared ``flock`` on ``DATA_DIR/users.lock``, and once
none does (its last user died without running ``EmbeddedRedis.stop``: SIGKILL, or
``flask run``'s default SIGTERM) the keeper shuts the store down. ``embedded.py`` uses the
lock helpers below too, so both sides lock alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["KEEPER_POLL_SECONDS", "lock_path_exclusively", "open_lock"]


def open_lock(path: Path) -> int:
    """Open (creating) a lock file of the data directory, private to its owner."""
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def lock_path_exclusively(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold ``path`` exclusively (``flock``) for the block: one starter or stopper at a time.

    With ``wait=False`` the block runs at once and is told whether the lock was free.
    """
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# How often the keeper looks for users; a store outlives its last user by at most this.
KEEPER_POLL_SECONDS = 0.5


def _keep(data_dir: Path) -> int:
    """Run the store (argv on stdin) and stop it when no process holds a share any more.

    The graceful path is ``EmbeddedRedis.stop`` (the last user shuts the store down and
    this returns when it exits); this loop covers users that died without running it.
    """
    args = json.loads(sys.stdin.read())
    store = subprocess.Popen(args, stdin=subprocess.DEVNULL,  # noqa: S603 - our argv
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Asked to stop (EmbeddedRedis._shutdown's fallback): the store goes with the keeper.
    signal.signal(signal.SIGTERM, lambda *_: store.terminate())
    socket_path = args[args.index("--unixsocket") + 1]
    users = open_lock(data_dir / "users.lock")
    while store.poll() is None:
        time.sleep(KEEPER_POLL_SECONDS)
        try:
            _stop_if_unused(store, data_dir, users, socket_path)
        except FileNotFoundError:  # the directory was deleted: nobody can find the store
            store.terminate()
    return store.wait()


def _stop_if_unused(store: subprocess.Popen[bytes], data_dir: Path, users: int,
                    socket_path: str) -> None:
    """Shut the store down if no process holds a share (a user may be starting: then not)."""
    # Never wait for start.lock: its holder may be a last user waiting for us to exit.
    with lock_path_exclusively(data_dir / "start.lock", wait=False) as held:
        if not held:
            return  # a user is starting or stopping: look again later
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # someone still uses it
        fcntl.flock(users, fcntl.LOCK_UN)
        if store.poll() is None:
            client = redis.Redis(unix_socket_path=socket_path, socket_timeout=5,
                                 retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                client.shutdown(save=False)
            try:
                store.wait(timeout=10)
            except subprocess.TimeoutExpired:
                store.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data_dir / "socket.path")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: _keeper.py DATA_DIR  (the store's argv as JSON on stdin)")
    sys.exit(_keep(Path(sys.argv[1])))
