"""Latchkey for resource servers: a backend team's own API enforces Latchkey sessions.

A session ended anywhere is refused on the very next request to the backend's API, as it
is on Latchkey's own: the access token is verified with keys from the Latchkey server's
JWKS, and the session is checked in the shared store in the same single round trip the
token server runs. docs/RESOURCE_SERVERS.md has the three ways to do it and their costs.
"""

__version__ = "0.1.0"
