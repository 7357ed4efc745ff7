"""Hold the Lua a resource server shares with the token server, so there is one copy.

``lua/_prelude.lua`` is the session record's codec and the rules every script applies
(clocks, expiry, device binding); ``lua/verify_touch.lua`` is the one round trip a
protected request costs, on Latchkey's own endpoints and on a backend's. They live here,
in the light distribution, and the token server (``latchkey_server.store``) reads them
from here: a resource server can then never run an older or different check than the
token server it sits beside, short of installing mismatched versions.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import redis

__all__ = ["PRELUDE", "VERIFY_TOUCH", "Script", "lua_source", "with_prelude"]

PRELUDE = "_prelude"
VERIFY_TOUCH = "verify_touch"


def lua_source(name: str) -> str:
    """Return the text of ``lua/<name>.lua`` shipped in this package."""
    return (resources.files("latchkey_resource") / "lua" / f"{name}.lua").read_text()


def with_prelude(body: str) -> str:
    """Return a script body with the shared helpers (session codec, clocks) in front."""
    return lua_source(PRELUDE) + "\n" + body


class Script:
    """One shared script, run by its SHA1 (EVALSHA); the body is sent (EVAL) only when the
    node lacks it: a restarted node, or a replica just promoted (script caches are neither
    persisted nor replicated). EVAL runs it on the node that owns the keys and caches it
    there: one round trip, on one Redis or on a cluster, and no SCRIPT LOAD (which a
    cluster client sends to every master, and which the resource ACL need not allow).
    """

    def __init__(self, client: Any, name: str) -> None:
        self.name = name
        self._client = client
        self.source = with_prelude(lua_source(name))
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script on ``keys`` with ``args``; return its reply."""
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self._client.eval(self.source, len(keys), *keys, *args)
