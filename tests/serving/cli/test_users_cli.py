"""``carprice users|keys|db``: the operator's commands, run through the real top-level CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from carprice.cli import app
from serving.settings import get_settings
from serving.store.database import current_revision, head_revision

PASSWORD = "a fine password"


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.db"
    # Production (the default) and no JWT secret, as after `make run` in a new shell: managing
    # users and keys needs no secret.
    monkeypatch.delenv("CARPRICE_ENV", raising=False)
    monkeypatch.delenv("CARPRICE_JWT_SECRET", raising=False)
    monkeypatch.setenv("CARPRICE_DATABASE_URL", url)
    monkeypatch.setenv("CARPRICE_BCRYPT_ROUNDS", "4")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_create_users_with_the_password_on_stdin(database_url: str) -> None:
    code, out, _ = run("users", "create", "ann", "--role", "predict", stdin=PASSWORD + "\n")
    assert code == 0, out
    assert "created user 'ann'" in out
    code, out, _ = run(
        "users", "create", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0
    code, out, _ = run("users", "list")
    assert code == 0
    assert re.search(r"ann\s+predict", out)
    assert re.search(r"root\s+admin", out)
    assert PASSWORD not in out


def test_a_password_is_never_an_argument(database_url: str) -> None:
    code, _, err = run("users", "create", "ann", "--role", "admin", "--password", PASSWORD)
    assert code != 0
    assert "No such option" in err


def test_refusals(database_url: str) -> None:
    assert run("users", "create", "ann", "--role", "admin", stdin=PASSWORD)[0] == 0
    code, _, err = run("users", "create", "ann", "--role", "admin", stdin=PASSWORD)
    assert (code, "already exists" in err) == (1, True)
    code, _, err = run("users", "create", "bob", "--role", "admin", stdin="short\n")
    assert (code, "at least 8" in err) == (1, True)
    code, _, err = run("users", "create", "bob", "--role", "root", stdin=PASSWORD)
    assert code == 2
    code, _, err = run("users", "create", "bob", "--role", "admin", stdin="")
    assert (code, "no password" in err) == (1, True)
    assert run("keys", "create", "--user", "nobody")[0] == 1
    assert run("keys", "revoke", "4242")[0] == 1
    assert run("users", "delete", "nobody", "--yes")[0] == 1


def test_keys_are_printed_once_listed_by_prefix_and_revocable(database_url: str) -> None:
    run("users", "create", "ann", "--role", "predict", stdin=PASSWORD)
    code, out, err = run("keys", "create", "--user", "ann", "--name", "laptop")
    assert code == 0
    key = out.strip()
    assert re.fullmatch(r"cpk_[0-9a-f]{10}_[A-Za-z0-9_-]{43}", key)  # alone on stdout
    assert "shown once" in err
    prefix = key.split("_")[1]
    code, out, _ = run("keys", "list")
    assert code == 0
    assert f"cpk_{prefix}_…" in out
    assert key not in out
    assert "active" in out
    assert "laptop" in out
    key_id = out.split()[0]
    code, out, _ = run("keys", "revoke", key_id)
    assert code == 0
    assert "revoked" in out
    assert "revoked" in run("keys", "list", "--user", "ann")[1]


def test_set_password_role_and_delete(database_url: str) -> None:
    run("users", "create", "ann", "--role", "predict", stdin=PASSWORD)
    run("keys", "create", "--user", "ann")
    assert run("users", "set-password", "ann", stdin="another fine password\n")[0] == 0
    code, out, _ = run("users", "set-role", "ann", "--role", "admin")
    assert (code, "now admin" in out) == (0, True)
    code, out, _ = run("users", "delete", "ann", stdin="n\n")
    assert code == 1  # not confirmed
    assert "ann" in run("users", "list")[1]
    assert run("users", "delete", "ann", "--yes")[0] == 0
    assert run("users", "list")[1].strip() == ""
    assert run("keys", "list")[1].strip() == ""  # the keys went with the user


def test_bootstrap_creates_an_admin_and_a_key_and_says_how_to_use_them(
    database_url: str,
) -> None:
    code, out, _ = run("users", "bootstrap", "--url", "http://localhost:9000")
    assert code == 0, out
    assert "admin user 'admin' created, password: " in out
    assert re.search(r'curl -H "X-API-Key: cpk_[0-9a-f]{10}_\S+" http://localhost:9000/v1/', out)
    assert "/v1/auth/token" in out
    code, out, _ = run("users", "bootstrap")
    assert code == 0
    assert "already exists" in out
    assert "password:" not in out
    assert len(run("keys", "list", "--user", "admin")[1].strip().splitlines()) == 2


def test_bootstrap_with_a_key_file_reuses_the_key_until_it_is_revoked(
    database_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "demo-key"
    code, first, _ = run("users", "bootstrap", "--key-file", str(key_file))
    assert code == 0, first
    key = key_file.read_text().strip()
    assert key in first
    assert f"KEY=$(cat {key_file})" in first
    assert key_file.stat().st_mode & 0o777 == 0o600
    code, second, _ = run("users", "bootstrap", "--key-file", str(key_file))
    assert code == 0
    assert "the same as last run" in second
    assert key in second
    assert "set-password admin" in second  # how to log in when the password is gone
    assert len(run("keys", "list", "--user", "admin")[1].strip().splitlines()) == 1
    key_id = run("keys", "list", "--user", "admin")[1].split()[0]
    assert run("keys", "revoke", key_id)[0] == 0
    code, third, _ = run("users", "bootstrap", "--key-file", str(key_file))
    assert code == 0
    new_key = key_file.read_text().strip()
    assert new_key != key
    assert new_key in third
    assert "new" in third


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():  # typer vendors click
        found += _commands(command, (*path, name))
    return found


def test_every_help_reads_as_plain_text() -> None:
    for command in _commands(typer.main.get_command(app)):
        code, out, _ = run(*command, "--help")
        assert code == 0, (command, out)
        assert "<bool>" not in out, command  # flags are --flag (or --flag/--no-flag)
        assert "``" not in out, command  # no RST markup
        assert ":class:" not in out, command
        assert "╭" not in out, command  # no rich panels


def test_db_upgrade_and_current(database_url: str) -> None:
    assert current_revision(database_url) is None
    code, out, _ = run("db", "current")
    assert (code, "database: empty") == (0, out.split(",")[0])
    code, out, _ = run("db", "upgrade")
    assert code == 0
    assert current_revision(database_url) == head_revision()
    assert f"newest: {head_revision()}" in run("db", "current")[1]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CARPRICE_BCRYPT_ROUNDS", "lots"), ("CARPRICE_CORS_ORIGINS", "https://a.example")],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    database_url: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    for command in (["users", "list"], ["serve"]):  # serve fails before starting uvicorn
        code, out, err = run(*command)
        assert code == 2
        assert err.startswith(f"configuration error: {variable}: "), err
        assert len(err.strip().splitlines()) == 1, err
        assert value not in err
        assert "Traceback" not in out + err
        assert "pydantic" not in err
