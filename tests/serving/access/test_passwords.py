"""Password hashing: bcrypt over a SHA-256 pre-hash, policy, equal work for unknown users."""

from __future__ import annotations

import time
import unicodedata

import bcrypt
import pytest

from serving.access.passwords import MAX_LENGTH, SCHEME, PasswordHasher, PasswordPolicyError


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4)


def test_hash_and_verify(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse battery")
    assert stored.startswith(SCHEME + "$2b$04$")
    assert hasher.verify("correct horse battery", stored)
    assert not hasher.verify("correct horse batterY", stored)
    assert not hasher.verify("", stored)


def test_salted(hasher: PasswordHasher) -> None:
    assert hasher.hash("same password") != hasher.hash("same password")


def test_every_character_of_a_long_password_counts(hasher: PasswordHasher) -> None:
    # Plain bcrypt would ignore everything after byte 72 (bcrypt 5 raises instead).
    long = "p" * 100
    stored = hasher.hash(long)
    assert hasher.verify(long, stored)
    assert not hasher.verify("p" * 72, stored)
    assert not hasher.verify("p" * 99 + "q", stored)


def test_multibyte_password_longer_than_72_bytes(hasher: PasswordHasher) -> None:
    password = "пароль-" * 10  # 130 bytes in UTF-8
    assert len(password.encode()) > 72
    assert hasher.verify(password, hasher.hash(password))


def test_plain_bcrypt_would_have_raised() -> None:
    with pytest.raises(ValueError, match="72"):
        bcrypt.hashpw(b"x" * 73, bcrypt.gensalt(4))


def test_unicode_is_normalised(hasher: PasswordHasher) -> None:
    composed = "café-crème"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert hasher.verify(decomposed, hasher.hash(composed))


def test_nul_bytes_do_not_truncate(hasher: PasswordHasher) -> None:
    stored = hasher.hash("abcdefgh\x00ijk")
    assert not hasher.verify("abcdefgh\x00xyz", stored)


@pytest.mark.parametrize("password", ["", "short", "x" * (MAX_LENGTH + 1)])
def test_policy(hasher: PasswordHasher, password: str) -> None:
    with pytest.raises(PasswordPolicyError):
        hasher.hash(password)


def test_over_max_length_never_matches(hasher: PasswordHasher) -> None:
    stored = hasher.hash("x" * MAX_LENGTH)
    assert hasher.verify("x" * MAX_LENGTH, stored)
    assert not hasher.verify("x" * (MAX_LENGTH + 1), stored)


def test_unknown_user_and_corrupt_hashes_never_match(hasher: PasswordHasher) -> None:
    assert not hasher.verify("anything", None)
    assert not hasher.verify("anything", "")
    assert not hasher.verify("anything", SCHEME + "not-a-bcrypt-hash")
    assert not hasher.verify("anything", "$2b$04$" + "a" * 53)  # plain bcrypt: not our scheme


def test_unknown_user_costs_as_much_as_a_wrong_password() -> None:
    hasher = PasswordHasher(rounds=8)  # ~15 ms: large enough to compare, small enough to run
    stored = hasher.hash("the real password")
    hasher.prepare()

    def timed(stored_hash: str | None) -> float:
        start = time.perf_counter()
        hasher.verify("a wrong password", stored_hash)
        return time.perf_counter() - start

    # Interleaved, and the fastest of each: a busy machine slows samples, it never speeds
    # them up. Without the dummy hash an unknown user would cost ~1000x less.
    samples: dict[str, list[float]] = {"wrong": [], "unknown": []}
    for _ in range(9):
        samples["wrong"].append(timed(stored))
        samples["unknown"].append(timed(None))
    assert 0.6 < min(samples["unknown"]) / min(samples["wrong"]) < 1.6, samples


def test_needs_rehash() -> None:
    stored = PasswordHasher(rounds=4).hash("a password")
    assert not PasswordHasher(rounds=4).needs_rehash(stored)
    assert PasswordHasher(rounds=5).needs_rehash(stored)
    assert PasswordHasher(rounds=4).needs_rehash("$2b$04$plainbcrypt")
