"""Turn SDK outcomes into the plain words a user reads; no Kivy, so it is unit-tested alone.

A session that ends without the user asking must say why (M9: a user who is silently
signed out re-enters a password on whatever screen appears next, which is how phishing
works). Each :class:`~latchkey_client.SignOutReason` and each SDK error class gets one
sentence written for a person, not a developer.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from latchkey_client import (
    DPoPKeyLostError,
    DPoPKeyUnavailableError,
    DPoPProofRefusedError,
    ForbiddenError,
    InvalidCredentialsError,
    InvalidRequestError,
    LatchkeyError,
    NetworkError,
    NetworkTimeoutError,
    NotSignedInError,
    PinningError,
    RateLimitedError,
    ServerError,
    SessionEndedError,
    SignOutReason,
    StepUpRequiredError,
    StorageError,
    UsernameTakenError,
    WeakPasswordError,
)

__all__ = [
    "KEY_HELD",
    "describe_error",
    "device_key_status",
    "fingerprint",
    "format_countdown",
    "format_relative",
    "short_user_agent",
    "sign_out_message",
]

_SIGN_OUT_WORDS: dict[SignOutReason, str] = {
    SignOutReason.USER: "You signed out.",
    SignOutReason.IDLE: "You were signed out because the app was not used for a while.",
    SignOutReason.ABSOLUTE: (
        "Your session reached its maximum length, so you were signed out. "
        "Please sign in again."
    ),
    SignOutReason.REVOKED: (
        "The server ended your session (for example an administrator signed you out, or "
        "this device no longer matched). Please sign in again."
    ),
    SignOutReason.REUSE: (
        "For your safety you were signed out everywhere: an old sign-in key of this "
        "account was used again, which can mean it was copied. Sign in again and consider "
        "changing your password."
    ),
    SignOutReason.PASSWORD_CHANGE: (
        "Your password was changed on another device, so this device was signed out."
    ),
    SignOutReason.REMOTE: "You were signed out from another device.",
    SignOutReason.STEP_UP: (
        "This session was replaced when your password was confirmed again. "
        "Please sign in again."
    ),
    SignOutReason.STORAGE_LOST: (
        "Your saved sign-in can no longer be read on this device (restored from a backup, "
        "or the phone's security settings changed). Please sign in again."
    ),
    SignOutReason.STOLEN: (
        "Your session was used from somewhere that does not hold this device's key, so "
        "someone may have copied it. You were signed out for safety; sign in again and "
        "consider changing your password."
    ),
}

#: Shown while secure storage is locked: the session goes on, nothing was lost.
STORAGE_LOCKED_SIGNED_IN = (
    "Your phone's secure storage is locked. You stay signed in; your sign-in is saved "
    "as soon as it unlocks."
)
STORAGE_LOCKED_AT_START = (
    "Your phone's secure storage is still locked, so your saved sign-in cannot be read "
    "yet. Unlock your phone and come back to the app: nothing was deleted."
)
#: Shown when the server cannot be reached after a resume: the session is kept.
OFFLINE_KEPT = "You are offline. You stay signed in; the app checks again when it can."


def sign_out_message(reason: SignOutReason | str | None) -> str:
    """Explain why the session ended, in one or two sentences for the user."""
    try:
        return _SIGN_OUT_WORDS[SignOutReason(reason)]
    except ValueError:
        return "You were signed out. Please sign in again."


def describe_error(error: BaseException) -> str:
    """Say what went wrong and what to do, without codes, stack traces or tokens."""
    # Order matters: subclasses before their parents.
    if isinstance(error, InvalidCredentialsError):
        return "That username and password don't match."
    if isinstance(error, WeakPasswordError):
        return "That password is too short or too common. Use at least 10 characters."
    if isinstance(error, UsernameTakenError):
        return "That username is already taken. Try another one."
    if isinstance(error, RateLimitedError):
        wait = error.retry_after_seconds
        if wait:
            return f"Too many attempts. Try again in {int(wait + 0.999)} seconds."
        return "Too many attempts. Please wait a moment and try again."
    if isinstance(error, StepUpRequiredError):
        return "Please confirm your password to continue."
    if isinstance(error, SessionEndedError):
        return "Your session has ended. Please sign in again."
    if isinstance(error, DPoPKeyUnavailableError):
        return ("This device's key store is locked. Unlock your phone and try again; "
                "you are still signed in.")
    if isinstance(error, DPoPKeyLostError):
        return "This device's key is gone, so its session cannot go on. Please sign in again."
    if isinstance(error, DPoPProofRefusedError):
        return ("The server did not accept this device's proof of its key. "
                "Please sign in again.")
    if isinstance(error, NotSignedInError):
        return "You are not signed in."
    if isinstance(error, PinningError):
        return "The server's identity could not be verified, so nothing was sent."
    if isinstance(error, NetworkTimeoutError):
        return "The server took too long to answer. Check your connection and try again."
    if isinstance(error, NetworkError):
        return "Can't reach the server. Check your connection and try again."
    if isinstance(error, ForbiddenError):
        if error.code == "registration_disabled":
            return "New accounts can't be created on this server."
        return "That isn't allowed for this account."
    if isinstance(error, ServerError):
        return "The server is having trouble. Please try again in a moment."
    if isinstance(error, InvalidRequestError):
        return error.detail or "Please check what you entered and try again."
    if isinstance(error, StorageError):
        return "This device's secure storage is not available."
    if isinstance(error, LatchkeyError):
        return "Something went wrong. Please try again."
    return "Something unexpected went wrong. Please try again."


#: The session screen's line when the session is bound to this device's key (DPoP, P1).
KEY_HELD = "This device holds its key"


def device_key_status(bound: bool, holder: str | None) -> str:
    """Say whether a copied token would work elsewhere: the session's DPoP binding.

    ``holder`` is where the key lives (``client.device_key_holder``).
    """
    if bound:
        return f"{KEY_HELD} ({holder})" if holder else KEY_HELD
    return "Not bound to a device key"


def fingerprint(session_id: str | None) -> str:
    """Return a short, stable fingerprint of a session id for display.

    The raw id grants nothing, but the project keeps it out of logs and screenshots all
    the same; a hash prefix is enough for a person to see that it changed.
    """
    if not session_id:
        return "—"
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()
    return f"{digest[:4]}·{digest[4:8]}"


def format_countdown(seconds: float | None) -> str:
    """Format seconds as ``m:ss`` (or ``h:mm:ss``); ``None`` becomes a dash."""
    if seconds is None:
        return "—"
    total = max(0, int(seconds + 0.999))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_relative(when: datetime | None, now: datetime | None = None) -> str:
    """Say how long ago ``when`` was: "just now", "5 min ago", "3 h ago", "2 days ago"."""
    if when is None:
        return "unknown"
    now = now or datetime.now(UTC)
    seconds = (now - when).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    days = round(seconds / 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def short_user_agent(user_agent: str | None, limit: int = 60) -> str:
    """Trim a user agent to one readable line."""
    if not user_agent:
        return "Unknown app"
    text = " ".join(user_agent.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
