"""Hold the Lua a resource server shares with the token server, so there is one copy.

``lua/_prelude.lua`` is the session record's codec and the rules every script applies
(clocks, expiry, device binding); ``lua/verify_touch.lua`` is the one round trip a
protected request costs, on Latchkey's own endpoints and on a backend's. They live here,
in the light distribution, and the token server (``latchkey_server.store``) reads them
from here: a resource server can then never run an older or different check than the
token server it sits beside, short of installing mismatched versions.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PRELUDE", "VERIFY_TOUCH", "lua_source", "with_prelude"]

PRELUDE = "_prelude"
VERIFY_TOUCH = "verify_touch"


def lua_source(name: str) -> str:
    """Return the text of ``lua/<name>.lua`` shipped in this package."""
    return (resources.files("latchkey_resource") / "lua" / f"{name}.lua").read_text()


def with_prelude(body: str) -> str:
    """Return a script body with the shared helpers (session codec, clocks) in front."""
    return lua_source(PRELUDE) + "\n" + body
