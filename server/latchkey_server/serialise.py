"""Write Latchkey's values the way API.md shows them: times, session entries, token responses.

The ``/v1`` views, the admin HTTP view and the admin CLI all print sessions and times; they
share these helpers so a session or a time looks the same wherever it appears.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .store import SessionInfo

if TYPE_CHECKING:  # sessions.py imports this module
    from .sessions import TokenGrant

__all__ = ["rfc3339", "rfc3339_ms", "session_json", "token_json"]


def rfc3339(moment: datetime | None = None, *, timespec: str = "seconds") -> str:
    """Format an aware time (default: now) as RFC 3339 in UTC with a ``Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def rfc3339_ms(ms: int) -> str:
    """Format a Redis-time millisecond timestamp as an RFC 3339 UTC string (seconds)."""
    return rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


def session_json(info: SessionInfo, current_session_id: str = "") -> dict[str, object]:
    """Return one entry of the session list (API.md); the device id is never shown."""
    return {
        "session_id": info.session_id,
        "device_name": info.device_name,
        "user_agent": info.user_agent,
        "ip": info.ip,
        "created_at": rfc3339_ms(info.created_ms),
        "last_seen_at": rfc3339_ms(info.last_seen_ms),
        "expires_at": rfc3339_ms(info.expires_ms),
        "auth_level": info.auth_level,
        "current": info.session_id == current_session_id,
    }


def token_json(grant: TokenGrant) -> dict[str, object]:
    """Return the token response of API.md for a grant of the session service."""
    return {
        "access_token": grant.access_token,
        "token_type": grant.token_type,
        "expires_in": grant.expires_in,
        "refresh_token": grant.refresh_token.value,
        "session_id": grant.session_id,
        "idle_timeout": grant.idle_timeout,
        "absolute_expires_in": grant.absolute_expires_in,
        "auth_level": grant.auth_level,
    }
