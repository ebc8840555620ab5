"""Users and API keys in the database: the operations the CLI, the admin API and login share.

Everything here is synchronous SQLAlchemy; async callers run it in a worker thread.
Results are plain frozen dataclasses, safe to use after the session is closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.access.apikeys import (
    GeneratedKey,
    KeyRecord,
    generate_api_key,
    key_prefix,
    secret_matches,
)
from serving.access.passwords import PasswordHasher
from serving.access.principals import Role, UnknownApiKey, UnknownUser, UserExists
from serving.store.database import Database
from serving.store.tables import ApiKey, User, utcnow

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""Allowed user names: 1-64 characters, letters, digits and ``._@-``."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as administrators see it (never the hash)."""

    id: int
    username: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as administrators see it (never the secret or its hash)."""

    id: int
    prefix: str
    username: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``key`` is the only time the plaintext exists."""

    info: KeyInfo
    key: str


def _user_info(user: User) -> UserInfo:
    return UserInfo(user.id, user.username, Role(user.role), user.created_at)


def _key_info(key: ApiKey, username: str) -> KeyInfo:
    return KeyInfo(
        key.id, key.prefix, username, key.name, key.created_at, key.last_used_at, key.revoked_at
    )


def _user_named(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UnknownUser(username)
    return user


def validate_username(username: str) -> str:
    """``username`` if acceptable, else ``ValueError``."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValueError("user name must be 1-64 letters, digits or ._@- (starting alphanumeric)")
    return username


class Accounts:
    """User and API-key administration over one database."""

    def __init__(self, db: Database, hasher: PasswordHasher) -> None:
        self.db = db
        self.hasher = hasher

    # --- users ---
    def create_user(self, username: str, password: str, role: Role) -> UserInfo:
        """Create a user; raises ``UserExists``, ``ValueError`` or ``PasswordPolicyError``."""
        validate_username(username)
        password_hash = self.hasher.hash(password)
        try:
            with self.db.session() as session:
                user = User(username=username, password_hash=password_hash, role=Role(role).value)
                session.add(user)
                session.flush()
                return _user_info(user)
        except IntegrityError:
            raise UserExists(f"user {username!r} already exists") from None

    def list_users(self) -> list[UserInfo]:
        """Every user, by name."""
        with self.db.session() as session:
            return [_user_info(u) for u in session.scalars(select(User).order_by(User.username))]

    def get_user(self, user_id: int) -> UserInfo | None:
        """The user with ``user_id``, if it still exists."""
        with self.db.session() as session:
            user = session.get(User, user_id)
            return _user_info(user) if user is not None else None

    def delete_user(self, username: str) -> UserInfo:
        """Delete a user and (cascade) their API keys; their tokens die within the cache TTL."""
        with self.db.session() as session:
            user = _user_named(session, username)
            info = _user_info(user)
            session.delete(user)
            return info

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (raises ``UnknownUser`` or ``PasswordPolicyError``)."""
        password_hash = self.hasher.hash(password)
        with self.db.session() as session:
            result = session.execute(
                update(User).where(User.username == username).values(password_hash=password_hash)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise UnknownUser(username)

    def set_role(self, username: str, role: Role) -> UserInfo:
        """Change a user's role (tokens and keys follow within the cache TTL)."""
        with self.db.session() as session:
            user = _user_named(session, username)
            user.role = Role(role).value
            return _user_info(user)

    def check_password(self, username: str, password: str) -> UserInfo | None:
        """The user if ``password`` is theirs, else ``None`` - same work for unknown names."""
        with self.db.session() as session:
            user = None
            if len(username) <= 64:
                user = session.scalar(select(User).where(User.username == username))
            stored = user.password_hash if user is not None else None
            if not self.hasher.verify(password, stored) or user is None:
                return None
            if self.hasher.needs_rehash(user.password_hash):
                user.password_hash = self.hasher.hash(password)
            return _user_info(user)

    # --- API keys ---
    def create_key(self, username: str, name: str | None = None) -> NewKey:
        """A new key for ``username`` (or ``UnknownUser``); the plaintext is in the result."""
        with self.db.session() as session:
            user = _user_named(session, username)
            for _ in range(5):  # a prefix collision (40 bits) is rare; retry rather than fail
                generated: GeneratedKey = generate_api_key()
                taken = session.scalar(select(ApiKey.id).where(ApiKey.prefix == generated.prefix))
                if taken is None:
                    break
            else:  # pragma: no cover - five 40-bit collisions in a row
                raise RuntimeError("could not find a free API key prefix")
            key = ApiKey(
                user_id=user.id,
                prefix=generated.prefix,
                secret_hash=generated.secret_hash,
                name=name,
            )
            session.add(key)
            session.flush()
            return NewKey(info=_key_info(key, user.username), key=generated.key)

    def list_keys(self, username: str | None = None) -> list[KeyInfo]:
        """Every key (of ``username`` if given), oldest first, revoked ones included."""
        with self.db.session() as session:
            query = select(ApiKey, User.username).join(User).order_by(ApiKey.id)
            if username is not None:
                query = query.where(User.username == username)
            return [_key_info(key, name) for key, name in session.execute(query).tuples()]

    def revoke_key(self, key_id: int) -> KeyInfo:
        """Revoke a key (idempotent; raises ``UnknownApiKey``)."""
        with self.db.session() as session:
            row = session.execute(
                select(ApiKey, User.username).join(User).where(ApiKey.id == key_id)
            ).first()
            if row is None:
                raise UnknownApiKey(str(key_id))
            key, username = row.tuple()
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return _key_info(key, username)

    def find_key(self, prefix: str) -> KeyRecord | None:
        """The verifier's view of the key with ``prefix`` (revoked ones too), if any."""
        with self.db.session() as session:
            row = session.execute(
                select(ApiKey, User.username, User.role).join(User).where(ApiKey.prefix == prefix)
            ).first()
            if row is None:
                return None
            key, username, role = row.tuple()
            return KeyRecord(
                key_id=key.id,
                prefix=key.prefix,
                secret_hash=key.secret_hash,
                revoked=key.revoked_at is not None,
                user_id=key.user_id,
                username=username,
                role=Role(role),
            )

    def verify_key(self, key: str) -> KeyRecord | None:
        """The record of ``key`` if it is a valid, active key (None: malformed, unknown, wrong
        or revoked). For the CLI; requests go through the cached ``ApiKeyVerifier``."""
        prefix = key_prefix(key)
        record = self.find_key(prefix) if prefix else None
        if record is None or record.revoked or not secret_matches(key, record):
            return None
        return record

    def record_key_use(self, used: Mapping[int, float]) -> None:
        """Store last-use times (Unix seconds) in one statement; never moves a time backwards."""
        if not used:
            return
        table = ApiKey.__table__
        assert isinstance(table, Table)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("key_id"))
            .where(or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("t")))
            .values(last_used_at=bindparam("t"))
        )
        rows = [
            {"key_id": key_id, "t": datetime.fromtimestamp(t, UTC)} for key_id, t in used.items()
        ]
        with self.db.engine.begin() as connection:
            connection.execute(stmt, rows)
