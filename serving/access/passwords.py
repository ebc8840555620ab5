"""Password hashing with bcrypt (the ``bcrypt`` package directly: passlib breaks with bcrypt 5).

Over-long passwords, deliberately: bcrypt reads only the first 72 bytes (bcrypt 5 raises on
more), so every password is first reduced to ``base64(sha256(NFC(password)))`` - 44 ASCII bytes,
no NUL - and that is what bcrypt hashes ("bcrypt-sha256", as pwdlib and Django do). Every
character of a long passphrase counts, and no password is refused for its length up to
``MAX_LENGTH`` characters, a sanity cap on request size rather than a bcrypt limit.

Unknown users cost the same as wrong passwords: ``verify(password, None)`` checks the password
against a dummy hash of the same cost, so timing does not reveal which usernames exist.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import unicodedata

import bcrypt

SCHEME = "bcrypt-sha256$"
"""Prefix of every stored hash: names the scheme so it can change later without a reset."""
MIN_LENGTH = 8
"""Shortest password accepted when one is set."""
MAX_LENGTH = 1024
"""Longest password accepted, in characters (anything longer never matches)."""


class PasswordPolicyError(ValueError):
    """A new password is unacceptable (too short or too long)."""


def _prehash(password: str) -> bytes:
    # NFC: the same passphrase typed on two keyboards may arrive composed or decomposed.
    digest = hashlib.sha256(unicodedata.normalize("NFC", password).encode("utf-8")).digest()
    return base64.b64encode(digest)


def check_policy(password: str) -> None:
    """Raise ``PasswordPolicyError`` if ``password`` may not be set."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_LENGTH} characters")


class PasswordHasher:
    """Hashes and verifies passwords at one bcrypt cost; one instance per process."""

    def __init__(self, rounds: int = 12) -> None:
        self.rounds = rounds

    @functools.cached_property
    def _dummy(self) -> str:
        # Same cost as real hashes, so an unknown user takes as long as a wrong password.
        # Computed on first use; the API calls ``prepare()`` at start-up so that first use
        # is not a slower (and so telling) login.
        return self._bcrypt(secrets.token_urlsafe(16))

    def prepare(self) -> None:
        """Compute the dummy hash now (about one bcrypt's time)."""
        _ = self._dummy

    def _bcrypt(self, password: str) -> str:
        return SCHEME + bcrypt.hashpw(_prehash(password), bcrypt.gensalt(self.rounds)).decode()

    def hash(self, password: str) -> str:
        """The stored form of a new ``password`` (raises ``PasswordPolicyError``)."""
        check_policy(password)
        return self._bcrypt(password)

    def verify(self, password: str, stored: str | None) -> bool:
        """Whether ``password`` matches ``stored``; ``None`` (no such user) does the same work."""
        ok = stored is not None and stored.startswith(SCHEME) and len(password) <= MAX_LENGTH
        target = stored if ok and stored is not None else self._dummy
        candidate = password if len(password) <= MAX_LENGTH else ""
        try:
            matched = bcrypt.checkpw(_prehash(candidate), target[len(SCHEME) :].encode())
        except ValueError:  # a corrupt stored hash: no match, never a 500
            return False
        return ok and matched

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with another scheme or cost than this hasher's."""
        if not stored.startswith(SCHEME):
            return True
        parts = stored[len(SCHEME) :].split("$")
        return len(parts) < 3 or parts[2] != f"{self.rounds:02d}"
