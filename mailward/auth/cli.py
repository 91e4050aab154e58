"""Operator commands for authentication: ``mailward users ...`` and ``mailward auth test``.

Owns argument handling and prompts only; the work is in ``users.py`` and the profiles.
Passwords come from a prompt (twice, hidden) or the first line of stdin, never from argv:
argv is visible to every local user in ``ps`` and lands in shell history.
"""
from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .base import AuthProfile, Credentials, Verdict

# `mailward auth test --config FILE` builds profiles through this hook; the gateway may
# replace it (e.g. to share its running cache). Default: the config loader + factory.
ProfileLoader = Callable[[Path], dict[str, AuthProfile]]


def default_load_profiles(config_path: Path) -> dict[str, AuthProfile]:
    from ..config import load_config
    from .factory import build_profiles

    cfg = load_config(config_path)
    return build_profiles(cfg.auth_profiles)


load_profiles: ProfileLoader = default_load_profiles


def _fail(message: str) -> None:
    click.echo(f"mailward: {message}", err=True)
    sys.exit(2)


def read_password(confirm: bool) -> str:
    """Hidden prompt on a terminal; otherwise the first line of stdin (for scripts)."""
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if password.endswith("\r"):
        password = password[:-1]
    if not password:
        _fail("no password on stdin")
    return password


def _users_file(users_file: Path | None, config_path: Path | None, profile: str | None) -> Path:
    if users_file is not None:
        return users_file
    if config_path is None:
        _fail("give --file USERS_FILE or --config FILE [--profile NAME]")
    from ..config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    local = {n: p for n, p in cfg.auth_profiles.items() if p.type == "local"}
    if profile is not None:
        if profile not in local:
            _fail(f"no local auth profile {profile!r} in {config_path}")
        return Path(local[profile].users_file)
    if len(local) != 1:
        _fail(f"{config_path} has {len(local)} local profiles; name one with --profile")
    return Path(next(iter(local.values())).users_file)


def _store(ctx: click.Context, create: bool = False):
    from .users import UserStore, UserStoreError

    path = _users_file(*ctx.obj)
    try:
        return UserStore(path, create=create)
    except UserStoreError as exc:
        _fail(str(exc))


def _where(f: Callable) -> Callable:
    """The file options, accepted after the sub-command too (`users passwd demo --file F`)."""
    @click.option("--file", "-f", "users_file", type=click.Path(path_type=Path), help="Users file.")
    @click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config naming the file.")
    @click.option("--profile", help="Local auth profile in --config (when there are several).")
    @functools.wraps(f)
    def wrapper(*args, users_file=None, config_path=None, profile=None, **kwargs):
        ctx = click.get_current_context()
        base = ctx.find_object(tuple) or (None, None, None)
        ctx.obj = (users_file or base[0], config_path or base[1], profile or base[2])
        return f(*args, **kwargs)
    return wrapper


@click.group("users")
@click.option("--file", "-f", "users_file", type=click.Path(path_type=Path), help="Users file.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config naming the file.")
@click.option("--profile", help="Local auth profile in --config (when there are several).")
@click.pass_context
def users_group(ctx: click.Context, users_file: Path | None, config_path: Path | None,
                profile: str | None) -> None:
    """Manage the users of a local auth profile (Argon2id hashes, file mode 0600)."""
    ctx.obj = (users_file, config_path, profile)


def _change(action: Callable[[], None]) -> None:
    from .users import UserStoreError

    try:
        action()
    except UserStoreError as exc:
        _fail(str(exc))


_CRAM_HELP = ("Also store a CRAM-MD5 (HMAC-MD5) context for NAME. Weaker than Argon2id: it is "
              "password-equivalent for CRAM-MD5 and falls fast to offline guessing.")


@users_group.command("add")
@click.argument("name")
@click.option("--cram", is_flag=True, help=_CRAM_HELP)
@_where
@click.pass_context
def users_add(ctx: click.Context, name: str, cram: bool) -> None:
    """Add NAME; the password is prompted for (or read from stdin)."""
    store = _store(ctx, create=True)
    password = read_password(confirm=True)
    _change(lambda: store.add(name, password, cram=cram))
    click.echo(f"added {name}")


@users_group.command("passwd")
@click.argument("name")
@click.option("--cram/--no-cram", default=None, help="Store / drop the CRAM-MD5 context (default: as before).")
@_where
@click.pass_context
def users_passwd(ctx: click.Context, name: str, cram: bool | None) -> None:
    """Set NAME's password (prompted for, or read from stdin)."""
    store = _store(ctx)
    if name not in store:
        _fail(f"no user {name!r}")
    password = read_password(confirm=True)
    _change(lambda: store.passwd(name, password, cram=cram))
    click.echo(f"changed password of {name}")


@users_group.command("del")
@click.argument("name")
@_where
@click.pass_context
def users_del(ctx: click.Context, name: str) -> None:
    """Delete NAME."""
    store = _store(ctx)
    _change(lambda: store.delete(name))
    click.echo(f"deleted {name}")


@users_group.command("list")
@_where
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """List user names, one a line."""
    for name in _store(ctx).names():
        click.echo(name)


@click.group("auth")
def auth_group() -> None:
    """Authentication profiles."""


@auth_group.command("test")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--mechanism", default="PLAIN", show_default=True, type=click.Choice(["PLAIN", "LOGIN"]))
@click.argument("profile")
@click.argument("user")
def auth_test(config_path: Path, mechanism: str, profile: str, user: str) -> None:
    """Check USER's password (prompted for, or stdin) against PROFILE. Exit 0 ok, 1 refused, 3 temporary."""
    try:
        profiles = load_profiles(config_path)
    except Exception as exc:  # config errors, unreadable files: one line, no traceback
        _fail(str(exc))
    if profile not in profiles:
        _fail(f"no auth profile {profile!r} (have: {', '.join(sorted(profiles)) or 'none'})")
    password = read_password(confirm=False)
    outcome = asyncio.run(profiles[profile].verify(Credentials(mechanism, user, password), icid=0,
                                                   client_ip="127.0.0.1"))
    detail = f" ({outcome.detail})" if outcome.detail else ""
    click.echo(f"{outcome.verdict.name} for user {user} by profile {outcome.profile}{detail}")
    sys.exit({Verdict.OK: 0, Verdict.FAIL: 1}.get(outcome.verdict, 3))
