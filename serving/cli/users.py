"""``carprice users|keys|db ...``: administer access from the command line.

Passwords are never command-line arguments (they would land in shell history and ``ps``): they
are prompted for (hidden, twice) on a terminal, or read as one line from stdin
(``--password-stdin``, or whenever stdin is not a terminal). Commands bring the database to the
newest schema first when ``CARPRICE_DATABASE_MIGRATE_ON_START`` is on (the default).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from serving.access.passwords import PasswordPolicyError
from serving.access.principals import Role, UnknownApiKey, UnknownUser, UserExists
from serving.cli.config import load_settings

if TYPE_CHECKING:
    from serving.access.accounts import Accounts, KeyInfo

users_app = typer.Typer(help="Users of the API: create, list, delete, set password or role.")
keys_app = typer.Typer(help="API keys: create (printed once), list, revoke.")
db_app = typer.Typer(help="The serving database (users, API keys): migrations.")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password as one line from stdin.")
]


@contextmanager
def _accounts() -> Iterator[Accounts]:
    # Imported here: SQLAlchemy and Alembic would slow down every other `carprice` command.
    from serving.access.accounts import Accounts
    from serving.access.passwords import PasswordHasher
    from serving.store.database import open_database

    settings = load_settings()
    db = open_database(settings.database_url, migrate=settings.database_migrate_on_start)
    try:
        yield Accounts(db, PasswordHasher(settings.bcrypt_rounds))
    finally:
        db.close()


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise _fail("no password on stdin")
        return password
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered


def _key_line(key: KeyInfo) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
    return (
        f"{key.id:>5}  cpk_{key.prefix}_…  {key.username:<20} {state:<24} "
        f"last used {used:<17} {key.name or ''}"
    ).rstrip()


# --- users ---


@users_app.command("create")
def create_user(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, ._@-).")],
    role: Annotated[Role, typer.Option(help="predict: call the model; admin: also administer.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user; the password is prompted for (or read from stdin)."""
    password = _read_password(password_stdin)
    with _accounts() as accounts:
        try:
            user = accounts.create_user(name, password, role)
        except UserExists:
            raise _fail(f"user {name!r} already exists") from None
        except (PasswordPolicyError, ValueError) as exc:
            raise _fail(str(exc)) from None
    typer.echo(f"created user {user.username!r} (id {user.id}, role {user.role})")


@users_app.command("list")
def list_users() -> None:
    """List the users and their roles."""
    with _accounts() as accounts:
        for user in accounts.list_users():
            typer.echo(
                f"{user.id:>5}  {user.username:<20} {user.role:<8} {user.created_at:%Y-%m-%d}"
            )


@users_app.command("delete")
def delete_user(
    name: Annotated[str, typer.Argument(help="User to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user and their API keys; their tokens stop working within seconds."""
    if not yes:
        typer.confirm(f"Delete user {name!r} and all their API keys?", abort=True)
    with _accounts() as accounts:
        try:
            accounts.delete_user(name)
        except UnknownUser:
            raise _fail(f"no user {name!r}") from None
    typer.echo(f"deleted user {name!r}")


@users_app.command("set-password")
def set_password(
    name: Annotated[str, typer.Argument(help="User whose password to replace.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Replace a user's password (prompted for, or read from stdin)."""
    password = _read_password(password_stdin)
    with _accounts() as accounts:
        try:
            accounts.set_password(name, password)
        except UnknownUser:
            raise _fail(f"no user {name!r}") from None
        except PasswordPolicyError as exc:
            raise _fail(str(exc)) from None
    typer.echo(f"password of {name!r} changed")


@users_app.command("set-role")
def set_role(
    name: Annotated[str, typer.Argument(help="User whose role to change.")],
    role: Annotated[Role, typer.Option(help="The new role.")],
) -> None:
    """Change a user's role (their keys and tokens follow within seconds)."""
    with _accounts() as accounts:
        try:
            user = accounts.set_role(name, role)
        except UnknownUser:
            raise _fail(f"no user {name!r}") from None
    typer.echo(f"{user.username!r} is now {user.role}")


@users_app.command("bootstrap")
def bootstrap(
    name: Annotated[str, typer.Option(help="Name of the admin user.")] = "admin",
    url: Annotated[str, typer.Option(help="Where the API listens (for the examples).")] = (
        "http://127.0.0.1:8000"
    ),
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="Keep the key in this file (mode 0600) and reuse it on later runs while it "
            "is valid, instead of creating another key each time."
        ),
    ] = None,
) -> None:
    """Make sure an admin exists (with a generated password) and print an API key for it.

    For first start-up and the demo (make run uses --key-file .carprice-demo-key): prints the
    password if the user was created now, the key, and curl examples. Without --key-file every
    run adds another key.
    """
    typer.echo(bootstrap_access(name, url, key_file))


def bootstrap_access(
    name: str = "admin", url: str = "http://127.0.0.1:8000", key_file: Path | None = None
) -> str:
    """Create admin ``name`` if missing and a key for it (or reuse the valid one in
    ``key_file``); the how-to-use text to print."""
    with _accounts() as accounts:
        existing = {u.username: u for u in accounts.list_users()}.get(name)
        if existing is not None and existing.role != Role.ADMIN:
            raise _fail(f"user {name!r} exists and is not an admin")
        password = None
        if existing is None:
            password = secrets.token_urlsafe(12)
            accounts.create_user(name, password, Role.ADMIN)
        key = _kept_key(accounts, name, key_file)
        reused = key is not None
        if key is None:
            key = accounts.create_key(name, "bootstrap").key
            if key_file is not None:
                _keep(key_file, key)
    lines = []
    if password is not None:
        lines.append(f"admin user {name!r} created, password: {password}  (shown once)")
    else:
        lines.append(
            f"admin user {name!r} already exists (password unchanged; forgotten? "
            f"`carprice users set-password {name}`)"
        )
    where = f" kept in {key_file}" if key_file is not None else " shown once"
    state = "the same as last run" if reused else "new"
    lines += [
        f"API key ({state},{where}; revoke with `carprice keys revoke ID`):",
        f"  {key}",
        "",
        "Use the key:",
    ]
    if key_file is not None:
        lines.append(f"  KEY=$(cat {key_file})")
        shown = "$KEY"
    else:
        shown = key
    lines.append(f'  curl -H "X-API-Key: {shown}" {url}/v1/models')
    lines += [
        f"Or log in as {name!r} for a bearer token (also the Authorize button of the docs):",
        f"  curl -d username={name} -d password={password or '...'} {url}/v1/auth/token",
        f"  {url}/docs",
    ]
    return "\n".join(lines)


def _kept_key(accounts: Accounts, name: str, key_file: Path | None) -> str | None:
    """The key in ``key_file`` if it is still an active key of ``name``."""
    if key_file is None or not key_file.is_file():
        return None
    key = key_file.read_text(encoding="utf-8").strip()
    record = accounts.verify_key(key)
    return key if record is not None and record.username == name else None


def _keep(key_file: Path, key: str) -> None:
    """Write ``key`` to ``key_file``, readable by its owner only."""
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode otherwise
        out.write(key + "\n")


# --- keys ---


@keys_app.command("create")
def create_key(
    user: Annotated[str, typer.Option("--user", help="User the key acts as.")],
    name: Annotated[str | None, typer.Option(help="A label, e.g. what uses the key.")] = None,
) -> None:
    """Create an API key and print it - the only time it is shown."""
    with _accounts() as accounts:
        try:
            new = accounts.create_key(user, name)
        except UnknownUser:
            raise _fail(f"no user {user!r}") from None
    typer.echo(f"API key {new.info.id} for {user!r} (shown once, store it now):", err=True)
    typer.echo(new.key)  # alone on stdout: KEY=$(carprice keys create --user NAME)


@keys_app.command("list")
def list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
) -> None:
    """List API keys (prefix only, never the secret), revoked ones included."""
    with _accounts() as accounts:
        for key in accounts.list_keys(user):
            typer.echo(_key_line(key))


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[int, typer.Argument(help="Id from `carprice keys list`.")],
) -> None:
    """Revoke an API key; running APIs refuse it within CARPRICE_API_KEY_CACHE_TTL seconds."""
    with _accounts() as accounts:
        try:
            key = accounts.revoke_key(key_id)
        except UnknownApiKey:
            raise _fail(f"no API key {key_id}") from None
    typer.echo(f"revoked API key {key.id} (cpk_{key.prefix}_…) of {key.username!r}")


# --- db ---


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations to CARPRICE_DATABASE_URL (what start-up does by default)."""
    from serving.store.database import current_revision, upgrade

    url = load_settings().database_url
    upgrade(url, revision)
    typer.echo(f"database at revision {current_revision(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one shipped."""
    from serving.store.database import current_revision, head_revision

    url = load_settings().database_url
    typer.echo(f"database: {current_revision(url) or 'empty'}, newest: {head_revision()}")
