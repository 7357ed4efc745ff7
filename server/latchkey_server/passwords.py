"""Hash and check passwords with argon2id, and refuse weak ones.

An unknown username is checked against a fixed dummy hash with the same parameters, so
"no such user" and "wrong password" take similar time and get the same answer.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .config import Settings

__all__ = ["USERNAME_RE", "PasswordPolicy", "Passwords"]

USERNAME_RE = re.compile(r"[A-Za-z0-9._@-]{3,64}")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


@cache
def _common_passwords() -> frozenset[str]:
    text = (resources.files("latchkey_server") / "data" / "common-passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


class PasswordPolicy:
    """Decide whether a password may be used (API.md: 10-1024 characters, not common)."""

    @staticmethod
    def weakness(password: str, username: str = "") -> str | None:
        """Return why a password is weak, or ``None`` if it is acceptable."""
        if len(password) < MIN_PASSWORD_LENGTH:
            return f"Use at least {MIN_PASSWORD_LENGTH} characters"
        if len(password) > MAX_PASSWORD_LENGTH:
            return f"Use at most {MAX_PASSWORD_LENGTH} characters"
        lowered = password.lower()
        if lowered in _common_passwords():
            return "That password is too common"
        if len(set(password)) < 4:
            return "Use more different characters"
        if username and username.lower() in lowered:
            return "The password must not contain the username"
        return None


class Passwords:
    """argon2id hashing with the configured cost."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._dummy_hash = self._hasher.hash("latchkey-timing-equaliser")

    def hash(self, password: str) -> str:
        """Return the argon2id hash of a password."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check a password; with no stored hash, spend the same time and fail."""
        try:
            return self._hasher.verify(stored_hash or self._dummy_hash, password) and bool(
                stored_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Say whether a hash was made with weaker parameters than configured now."""
        return self._hasher.check_needs_rehash(stored_hash)
