"""The `mailward` command: one entry point, sub-commands grouped by part.

Owns argument parsing and operator-facing messages only; each group's work lives in its
part (`auth/cli.py`, `queue/cli.py`, `delivery/cli.py`, `logs/cli.py`). Errors reach the
operator as one clear line and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .config import ConfigError, default_config_text, demo_config, dump, load_config, parse_config


@click.group()
@click.version_option(package_name="mailward")
def main() -> None:
    """mailward: a mail gateway with SMTP AUTH profiles and appliance-exact mail_logs."""


def fail(message: str) -> None:
    click.echo(f"mailward: {message}", err=True)
    sys.exit(2)


# --- run -----------------------------------------------------------------------------------

@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="TOML config file.")
@click.option("--demo", is_flag=True, help="Use the embedded demo config (state under ./var).")
def run(config_path: Path | None, demo: bool) -> None:
    """Run the gateway in the foreground until SIGINT/SIGTERM."""
    from .gateway.app import run_gateway

    if bool(config_path) == demo:
        fail("give exactly one of --config FILE or --demo")
    try:
        if demo:
            cfg = demo_config(Path.cwd())
        else:
            cfg = load_config(config_path)
        run_gateway(cfg, demo=demo)
    except ConfigError as exc:
        fail(str(exc))


# --- config --------------------------------------------------------------------------------

@main.group()
def config() -> None:
    """Check and show the configuration."""


@config.command("check")
@click.argument("path", type=click.Path(path_type=Path))
def config_check(path: Path) -> None:
    """Validate FILE; print the problems with their line numbers."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        fail(str(exc))
    click.echo(f"{path}: OK ({len(cfg.listener)} listener(s), {len(cfg.auth_profiles)} auth profile(s), "
               f"{len(cfg.route)} route(s))")


@config.command("show")
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--defaults", "mode", flag_value="defaults", help="Every setting, defaults filled in (postconf -d).")
@click.option("--non-default", "mode", flag_value="non-default", default=True,
              help="Only settings that differ from the defaults (postconf -n).")
def config_show(config_path: Path | None, mode: str) -> None:
    """Show the effective configuration as JSON (secrets are never inline, so never shown)."""
    try:
        cfg = load_config(config_path, resolve=False) if config_path else parse_config("")
    except ConfigError as exc:
        fail(str(exc))
    click.echo(json.dumps(dump(cfg, non_default=(mode == "non-default")), indent=2, default=str))


@config.command("example")
def config_example() -> None:
    """Print a complete commented example config."""
    click.echo(default_config_text(), nl=False)


# --- tls -----------------------------------------------------------------------------------

@main.group()
def tls() -> None:
    """TLS helpers."""


@tls.command("selfsigned")
@click.option("--cn", default="localhost", show_default=True)
@click.option("--cert", "cert", type=click.Path(path_type=Path), required=True)
@click.option("--key", "key", type=click.Path(path_type=Path), required=True)
def tls_selfsigned(cn: str, cert: Path, key: Path) -> None:
    """Make a self-signed certificate and key (key file mode 0600), for testing."""
    from .net.tls import selfsigned

    selfsigned(cn, cert, key)
    click.echo(f"wrote {cert} and {key}")


def _register_groups() -> None:
    # Each part owns its command group; they are mounted here.
    from .auth.cli import auth_group, users_group
    from .logs.cli import logs_group
    from .queue.cli import queue_group

    main.add_command(users_group, "users")
    main.add_command(auth_group, "auth")
    main.add_command(logs_group, "logs")
    main.add_command(queue_group, "queue")
    try:
        from .delivery import cli as dcli
    except ImportError:  # pragma: no cover - delivery CLI is optional at import time
        return
    for name in ("flush", "delete", "bounce"):
        cmd = getattr(dcli, name, None)
        if isinstance(cmd, click.Command):
            queue_group.add_command(cmd, name)


_register_groups()
