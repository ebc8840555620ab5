"""Users and keys in the database (SQLite and PostgreSQL): the operations CLI and API share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.access.accounts import Accounts
from serving.access.passwords import PasswordHasher, PasswordPolicyError
from serving.access.principals import Role, UnknownApiKey, UnknownUser, UserExists
from serving.store.database import open_database
from tests.serving.services import postgres_database

PASSWORD = "a fine password"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Accounts]:
    database: contextlib.AbstractContextManager[str] = (
        postgres_database()
        if request.param == "postgresql"
        else contextlib.nullcontext(f"sqlite:///{tmp_path}/accounts.db")
    )
    with database as url:
        db = open_database(url, migrate=True)
        yield Accounts(db, PasswordHasher(rounds=4))
        db.close()


def test_create_and_list_users(accounts: Accounts) -> None:
    ann = accounts.create_user("ann", PASSWORD, Role.PREDICT)
    root = accounts.create_user("root", PASSWORD, Role.ADMIN)
    assert (ann.username, ann.role) == ("ann", Role.PREDICT)
    assert [u.username for u in accounts.list_users()] == ["ann", "root"]
    assert accounts.get_user(root.id) == root
    assert accounts.get_user(99999) is None


def test_duplicate_and_invalid_users_are_refused(accounts: Accounts) -> None:
    accounts.create_user("ann", PASSWORD, Role.PREDICT)
    with pytest.raises(UserExists):
        accounts.create_user("ann", PASSWORD, Role.ADMIN)
    for bad in ("", " ann", "ann smith", "a" * 65, "-ann", "ann\n"):
        with pytest.raises(ValueError, match="user name"):
            accounts.create_user(bad, PASSWORD, Role.PREDICT)
    with pytest.raises(PasswordPolicyError):
        accounts.create_user("bob", "short", Role.PREDICT)
    assert [u.username for u in accounts.list_users()] == ["ann"]


def test_check_password(accounts: Accounts) -> None:
    ann = accounts.create_user("ann", PASSWORD, Role.PREDICT)
    assert accounts.check_password("ann", PASSWORD) == ann
    assert accounts.check_password("ann", PASSWORD + "!") is None
    assert accounts.check_password("nobody", PASSWORD) is None
    assert accounts.check_password("x" * 10_000, PASSWORD) is None


def test_login_upgrades_an_old_cost(accounts: Accounts) -> None:
    accounts.create_user("ann", PASSWORD, Role.PREDICT)
    stronger = Accounts(accounts.db, PasswordHasher(rounds=5))
    assert stronger.check_password("ann", PASSWORD) is not None
    assert stronger.check_password("ann", PASSWORD) is not None  # the rehashed one verifies
    assert not stronger.hasher.needs_rehash(_stored_hash(accounts, "ann"))


def _stored_hash(accounts: Accounts, username: str) -> str:
    from sqlalchemy import select

    from serving.store.tables import User

    with accounts.db.session() as session:
        return str(session.scalar(select(User.password_hash).where(User.username == username)))


def test_set_password_and_role(accounts: Accounts) -> None:
    accounts.create_user("ann", PASSWORD, Role.PREDICT)
    accounts.set_password("ann", "another fine password")
    assert accounts.check_password("ann", PASSWORD) is None
    assert accounts.check_password("ann", "another fine password") is not None
    assert accounts.set_role("ann", Role.ADMIN).role == Role.ADMIN
    with pytest.raises(UnknownUser):
        accounts.set_password("nobody", PASSWORD)
    with pytest.raises(UnknownUser):
        accounts.set_role("nobody", Role.ADMIN)


def test_keys_lifecycle(accounts: Accounts) -> None:
    accounts.create_user("ann", PASSWORD, Role.PREDICT)
    accounts.create_user("bob", PASSWORD, Role.ADMIN)
    a = accounts.create_key("ann", "laptop")
    b = accounts.create_key("bob")
    assert [k.id for k in accounts.list_keys()] == [a.info.id, b.info.id]
    assert [k.id for k in accounts.list_keys("ann")] == [a.info.id]
    record = accounts.find_key(b.info.prefix)
    assert record is not None
    assert (record.username, record.role, record.revoked) == ("bob", Role.ADMIN, False)
    revoked = accounts.revoke_key(a.info.id)
    assert revoked.revoked_at is not None
    assert accounts.revoke_key(a.info.id).revoked_at == revoked.revoked_at  # idempotent
    assert accounts.find_key(a.info.prefix).revoked  # type: ignore[union-attr]
    with pytest.raises(UnknownApiKey):
        accounts.revoke_key(99999)
    with pytest.raises(UnknownUser):
        accounts.create_key("nobody")
    assert accounts.find_key("ffffffffff") is None


def test_deleting_a_user_deletes_their_keys(accounts: Accounts) -> None:
    accounts.create_user("ann", PASSWORD, Role.PREDICT)
    key = accounts.create_key("ann")
    deleted = accounts.delete_user("ann")
    assert deleted.username == "ann"
    assert accounts.find_key(key.info.prefix) is None
    assert accounts.list_keys() == []
    with pytest.raises(UnknownUser):
        accounts.delete_user("ann")
    # Ids are never reused: a deleted user's token cannot come back as someone else's.
    again = accounts.create_user("ann", PASSWORD, Role.PREDICT)
    assert again.id != deleted.id
