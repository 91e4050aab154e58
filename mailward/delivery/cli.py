"""Queue commands that need the running gateway: ``flush``, ``delete MID``, ``bounce MID``.

Owns only argument parsing and one-line messages; the work is done inside the gateway by
the queue manager, reached through the control socket (``control.py``) in the spool
directory. These are plain ``click.Command``s that ``mailward/cli.py`` mounts under
``mailward queue``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .control import ControlError, call

_config_opt = click.option("--config", "config_path", type=click.Path(path_type=Path),
                           help="The gateway's TOML config (its spool directory holds the control socket).")
_socket_opt = click.option("--socket", "socket_path", type=click.Path(path_type=Path),
                           help="The control socket itself (default: <spool_dir>/control.sock).")


def _socket(config_path: Path | None, socket_path: Path | None) -> Path:
    if socket_path is not None:
        return socket_path
    from ..config import ConfigError, default_config_text, load_config, parse_config

    try:
        cfg = load_config(config_path) if config_path else parse_config(default_config_text(), "example.toml",
                                                                         Path.cwd())
    except ConfigError as exc:
        _fail(str(exc))
    return cfg.gateway.spool_dir / "control.sock"


def _fail(message: str) -> None:
    click.echo(f"mailward: {message}", err=True)
    sys.exit(2)


def _call(config_path: Path | None, socket_path: Path | None, request: dict) -> dict:
    try:
        return call(_socket(config_path, socket_path), request)
    except ControlError as exc:
        _fail(str(exc))
        raise   # unreachable; keeps type checkers calm


@click.command("flush")
@_config_opt
@_socket_opt
def flush(config_path: Path | None, socket_path: Path | None) -> None:
    """Try every queued message now, ignoring retry times."""
    answer = _call(config_path, socket_path, {"op": "flush"})
    click.echo(f"flush requested: {answer['queued']} message(s) in the queue")


@click.command("delete")
@click.argument("mid", type=int)
@_config_opt
@_socket_opt
def delete(mid: int, config_path: Path | None, socket_path: Path | None) -> None:
    """Remove message MID from the queue without notifying the sender."""
    _call(config_path, socket_path, {"op": "delete", "mid": mid})
    click.echo(f"MID {mid} deleted")


@click.command("bounce")
@click.argument("mid", type=int)
@_config_opt
@_socket_opt
def bounce(mid: int, config_path: Path | None, socket_path: Path | None) -> None:
    """Bounce every pending recipient of MID now (a DSN goes to the sender)."""
    answer = _call(config_path, socket_path, {"op": "bounce", "mid": mid})
    dsn = answer.get("dsn_mid")
    click.echo(f"MID {mid} bounced" + (f"; DSN queued as MID {dsn}" if dsn else " (null sender: no DSN)"))
