"""Hold the Lua a resource server shares with the token server, so there is one copy.

``lua/_prelude.lua`` is the session record's codec and the rules every script applies
(clocks, expiry, device binding); ``lua/verify_touch.lua`` is the one round trip a
protected request costs, on Latchkey's own endpoints and on a backend's. They live here,
in the light distribution, and the token server (``latchkey_server.store``) reads them
from here: a resource server can then never run an older or different check than the
token server it sits beside, short of installing mismatched versions.

``Script`` is the one runner of them, for both: ``FCALL`` of a FUNCTION library where the
store allows it, ``EVALSHA`` (and ``EVAL`` once per node) where it does not.
"""

from __future__ import annotations

import hashlib
import logging
import time
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster

__all__ = ["LOAD_RETRY_SECONDS", "PRELUDE", "VERIFY_TOUCH", "Script", "function_library",
           "lua_source", "with_prelude"]

_log = logging.getLogger("latchkey_resource")

PRELUDE = "_prelude"
# How long a runner whose library load was refused uses EVALSHA before trying FCALL again.
LOAD_RETRY_SECONDS = 60.0
VERIFY_TOUCH = "verify_touch"


def lua_source(name: str) -> str:
    """Return the text of ``lua/<name>.lua`` shipped in this package."""
    return (resources.files("latchkey_resource") / "lua" / f"{name}.lua").read_text()


def with_prelude(body: str) -> str:
    """Return a script body with the shared helpers (session codec, clocks) in front."""
    return lua_source(PRELUDE) + "\n" + body


class Script:
    """One shared Lua script: an ``FCALL`` of its FUNCTION library where the store has
    them, else an ``EVALSHA``, the body sent only when a node lacks it. The one runner of
    Latchkey's scripts: the token server's store (``latchkey_server.store``) and a
    resource server's verifier both run theirs through it, so both get the cheaper call
    and both fall back the same way.

    Why a library: ``EVAL`` re-runs the shared prelude on every call; a library runs it
    once, at load (``function_library``; docs/PERFORMANCE.md, "The Lua prelude"). The
    library is loaded by the first call that finds it missing, on the node that owns the
    call's keys; that call, and every call on a store without libraries, runs the same
    source as ``EVALSHA``, so nothing depends on which one ran:

    - ``Function not found`` (a new store; one flushed; a node that never received the
      library): load it on that node, run this call by ``EVALSHA``, ``FCALL`` from then on.
      Libraries are kept in RDB/AOF and replicated, so a restarted or promoted node usually
      has it already; one that does not is loaded again the same way.
    - no ``FCALL`` (Redis 6.2), or no permission for it (an ACL that allows only
      ``EVALSHA``): ``EVALSHA`` from then on.
    - a runner made with ``load=False`` (a resource server's: ``acl.py`` grants ``FCALL``
      but not ``FUNCTION LOAD``, so only the token server names libraries), no permission
      to load, or a library the store refuses: ``EVALSHA``, and ``FCALL`` tried again
      every ``LOAD_RETRY_SECONDS``: by then the token server has usually loaded the
      library (same version, same name), and this runner calls it from then on.

    Each of these is answered before a script runs, so no call runs twice.

    ``EVALSHA`` itself: redis-py's ``Script`` answers NOSCRIPT (a restarted node, or a
    replica just promoted: script caches are neither persisted nor replicated) with SCRIPT
    LOAD, which a cluster client sends to every master, so one master down made a healthy
    one fail too. EVAL runs the body on the node that owns the keys and caches it there:
    the same slot, one round trip, on one Redis or on a cluster.

    ``body`` defaults to this package's ``lua/<name>.lua``; the token server passes its
    own scripts' bodies. ``functions=False`` never tries ``FCALL``; ``load=False`` never
    sends ``FUNCTION LOAD``. ``log`` is the logger of the one warning a refused load
    causes (the token server's is ``latchkey.store``, which its JSON log carries).
    """

    def __init__(self, client: Any, name: str, body: str | None = None, *,
                 functions: bool = True, load: bool = True,
                 log: logging.Logger | None = None) -> None:
        self.name = name
        self._client = client
        if body is None:
            body = lua_source(name)
        self.source = with_prelude(body)
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        self.function, self._library = function_library(name, body)
        # Whether to try FCALL; cleared for good when the store has no FCALL for us.
        self.functions = functions
        # When to try FCALL again after a refused load (monotonic seconds; 0: never).
        self._retry_at = 0.0
        self._load_warned = False
        self._may_load = load
        self._log = log or _log

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script on ``keys`` with ``args``; return its reply."""
        if self.functions or (self._retry_at and time.monotonic() >= self._retry_at):
            try:
                reply = self._client.fcall(self.function, len(keys), *keys, *args)
            except redis.exceptions.ResponseError as exc:
                if not self._functions_unusable(exc, keys):
                    raise
            else:
                self.functions = True  # after a retry: someone loaded it meanwhile
                return reply
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self._client.eval(self.source, len(keys), *keys, *args)

    def _functions_unusable(self, exc: redis.exceptions.ResponseError, keys: list[str]) -> bool:
        """Handle an error FCALL answered before running; False if the script raised it."""
        message = str(exc)
        if message.startswith("Function not found"):
            self.functions = self._may_load and self._load(keys)
            self._retry_at = 0.0 if self.functions else time.monotonic() + LOAD_RETRY_SECONDS
            return True
        if (isinstance(exc, redis.exceptions.NoPermissionError)
                or message.lower().startswith("unknown command")):
            self.functions = False
            self._retry_at = 0.0
            return True
        return False

    def _load(self, keys: list[str]) -> bool:
        """Load the library on the node that owns ``keys``; whether FCALL can be used."""
        target: dict[str, Any] = {}
        if isinstance(self._client, RedisCluster):
            # FUNCTION LOAD goes to every master by default; one master down would fail it.
            target["target_nodes"] = self._client.get_node_from_key(  # type: ignore[no-untyped-call]
                keys[0])
        try:
            self._client.execute_command("FUNCTION LOAD", self._library, **target)
        except redis.exceptions.ResponseError as exc:
            if "already exists" in str(exc):  # another worker or server loaded it first
                return True
            if self._load_warned:
                return False
            self._load_warned = True
            self._log.warning("script library not loaded; using EVALSHA", extra={
                "event": "redis_function_load_failed", "lk_script": self.name,
                "lk_error": str(exc)[:200]})
            return False
        return True


# The prelude's one statement a FUNCTION library may not run (effects replication is the
# only mode on Redis 7+; Redis 6.2's EVAL needs it asked for).
_REPLICATE_COMMANDS = "redis.replicate_commands()\n"


def function_library(name: str, body: str) -> tuple[str, str]:
    """Return ``(function name, library source)``: prelude and ``body`` as a FUNCTION library.

    Sent to EVAL, a script re-runs the prelude on every call (format strings, tables, a
    closure per helper); loaded with ``FUNCTION LOAD`` (Redis 7+, Valkey) it runs once and
    a call runs only the body (docs/PERFORMANCE.md measures the difference). The library
    and its one function are named after the script and a hash of its text, like an
    EVALSHA's SHA1: libraries share one namespace per Redis, and a token server and the
    resource servers beside it may run different versions, so a version never replaces
    another's, and the same version loaded twice is the same library.
    """
    prelude = lua_source(PRELUDE)
    if _REPLICATE_COMMANDS not in prelude:
        raise ValueError("the prelude no longer asks for effects replication where expected")
    digest = hashlib.sha1(with_prelude(body).encode(), usedforsecurity=False).hexdigest()
    function = f"latchkey_{name}_{digest[:20]}"
    library = (f"#!lua name={function}\n{prelude.replace(_REPLICATE_COMMANDS, '', 1)}\n"
               f"redis.register_function{{function_name = '{function}',\n"
               f"  callback = function(KEYS, ARGV)\n{body}\nend}}\n")
    return function, library
